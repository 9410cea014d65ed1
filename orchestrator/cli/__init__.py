"""The ``scaivault-rotator`` command line: process roles and on-call commands."""
