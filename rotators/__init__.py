"""The scaivault-rotator plugin SDK: the rotator contract and the built-in rotators."""

from rotators.contract import (
    CAPABILITIES,
    STRATEGIES,
    Capabilities,
    MemoryNotes,
    NoOptions,
    Notes,
    RotationContext,
    Rotator,
    SecretVersion,
    Strategy,
    Usage,
    VaultReader,
)
from rotators.errors import CredentialRejected, PermanentError, RotatorError, TransientError
from rotators.secret import Secret, SecretData

__all__ = [
    "CAPABILITIES",
    "STRATEGIES",
    "Capabilities",
    "CredentialRejected",
    "MemoryNotes",
    "NoOptions",
    "Notes",
    "PermanentError",
    "RotationContext",
    "Rotator",
    "RotatorError",
    "Secret",
    "SecretData",
    "SecretVersion",
    "Strategy",
    "TransientError",
    "Usage",
    "VaultReader",
]
