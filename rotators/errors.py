"""Errors a rotator raises. Failures are raised, never returned.

    RotatorError                 root of everything a rotator raises
     +-- TransientError          retry later (rate limits, timeouts, 5xx, propagation delay)
     +-- PermanentError          stop and page a human (bad permissions, bad ids, wrong config)
     +-- CredentialRejected      the target refused the *minted value* (e.g. a password policy):
                                 discard it and mint another, do not retry the same value

Messages and attributes never carry a secret value: translate third-party exceptions whose
text may contain one (simple-salesforce embeds response bodies) without their text.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Root of every error a rotator raises.

    ``step`` names the rotation step that failed (``mint``, ``apply``, ``verify``, ``finalize``)
    when known; the engine fills it in if the rotator did not.
    """

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step


class TransientError(RotatorError):
    """A failure that may pass: the engine retries with backoff and jitter.

    ``retry_after`` (seconds) asks for at least that long before the next attempt, e.g. when a
    target's API budget is exhausted.
    """

    def __init__(
        self, message: str, *, step: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, step=step)
        self.retry_after = retry_after


class PermanentError(RotatorError):
    """A failure that will not pass by retrying: the rotation fails loudly, old credential kept."""


class CredentialRejected(RotatorError):
    """The target refused the minted value itself; the engine discards it and mints again."""
