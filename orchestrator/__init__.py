"""scaivault-rotator's runtime: settings, ScaiVault client, receiver, engine, CLI, emulator."""

__version__ = "0.1.0"
