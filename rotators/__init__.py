"""The scaivault-rotator plugin SDK: the rotator contract, its errors and value wrappers, and
the password generator (the built-in rotators live in its modules)."""

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
from rotators.passwords import PasswordPolicy, generate, policy_problem
from rotators.secret import Secret, SecretData

__all__ = [
    "CAPABILITIES",
    "STRATEGIES",
    "Capabilities",
    "CredentialRejected",
    "MemoryNotes",
    "NoOptions",
    "Notes",
    "PasswordPolicy",
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
    "generate",
    "policy_problem",
]
