"""The scaivault-rotator plugin SDK: the rotator contract and the built-in rotators."""

from rotators.contract import (
    STRATEGIES,
    NoOptions,
    RotationContext,
    Rotator,
    SecretVersion,
    Strategy,
    VaultReader,
)
from rotators.errors import CredentialRejected, PermanentError, RotatorError, TransientError
from rotators.secret import Secret, SecretData

__all__ = [
    "STRATEGIES",
    "CredentialRejected",
    "NoOptions",
    "PermanentError",
    "RotationContext",
    "Rotator",
    "RotatorError",
    "Secret",
    "SecretData",
    "SecretVersion",
    "Strategy",
    "TransientError",
    "VaultReader",
]
