"""Exceptions of the orchestrator, one tree. Messages name what went wrong and what to do; never a
secret.

    OrchestratorError
     +-- ConfigError                    settings or routing file unusable (CLI exit 2)
     |    +-- PluginError               (in orchestrator.plugins) a rotator plugin is broken
     +-- InvalidPath                    (also a ValueError) a secret path we refuse to send
     +-- VaultError                     ScaiVault refused or could not be reached
     |    +-- VaultTransientError       (also a rotators.TransientError) retry with backoff
     |    |    +-- RateLimited              rate_limited
     |    |    +-- ServiceUnavailable       service_unavailable, 5xx, timeouts, connection errors
     |    |    +-- WriteOutcomeUnknown      the answer to our write was lost or came too late: it
     |    |                                 may still land; never re-sent by the client itself
     |    +-- VaultPermanentError       (also a rotators.PermanentError) do not retry
     |         +-- AuthenticationRequired   authentication_required
     |         +-- TokenExpired             token_expired (after re-reading SCAIVAULT_TOKEN_FILE)
     |         +-- AccessDenied             access_denied
     |         +-- NotFound                 not_found
     |         +-- InvalidRequest           invalid_request, and unknown 4xx codes
     |         +-- UnexpectedResponse       a success whose body is not what the spec says
     |         +-- VersionConflict          version_conflict (CAS mismatch)
     +-- StoreError                     the run store refused an operation (names the run)
     |    +-- RunNotFound               no run record with that id
     |    +-- LeaseLost                 another worker drives the run now: stop
     |    +-- PathBusy                  another rotation holds the path
     |    +-- IllegalTransition         the run's state does not allow the change
     |         +-- RunHeld                  on-call holds the run (a rollback in grace)
     |         +-- FinalizeTooEarly         grace is not over on Redis's clock
     +-- RetryLater                     transient: run the task again after a short countdown
     +-- NeedsAttention                 the rotation cannot safely go on by itself
     +-- Untrusted                      ScaiVault metadata that cannot be ours as written
     +-- SealError                      a value cannot be sealed or unsealed
     +-- WebhookRejected                a webhook request failed a receiver check (HTTP status
     |                                  and a reason enum; never the body or the signature)
     +-- PublishError                   the receiver could not claim and publish an event in
     |                                  time (Redis down or slow): the request answers 503
     +-- CommandError                   an on-call command cannot do what was asked (hint, exit)
     +-- StackError                     a local stack's child process did not start or died

VaultTransientError and VaultPermanentError also derive from the rotators' TransientError and
PermanentError, so a rotator that reads ScaiVault and every layer above share one split.
:func:`reason_of` is the one way an exception becomes text for a run record, log or alert.
"""

from __future__ import annotations

from rotators.errors import PermanentError, RotatorError, TransientError


class OrchestratorError(Exception):
    """Root of the orchestrator's own exceptions."""


class ConfigError(OrchestratorError):
    """Settings or the routing file are missing or malformed. ``problems`` lists every one."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class InvalidPath(OrchestratorError, ValueError):
    """A secret path with an empty, ``.`` or ``..`` segment or a leading ``/``; never sent."""


class VaultError(OrchestratorError, RotatorError):
    """ScaiVault answered with an error, or could not be reached.

    ``code`` is the spec's error code (``rate_limited``, ``not_found``, ...), ``status`` the HTTP
    status (``None`` when no response came), ``path`` the secret path involved if any.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.step: str | None = None
        self.code = code
        self.status = status
        self.path = path
        self.retry_after = retry_after


class VaultTransientError(VaultError, TransientError):
    """A failure that may pass; retried with backoff and jitter until a deadline."""


class RateLimited(VaultTransientError):
    """ScaiVault said ``rate_limited``; ``retry_after`` holds its ``Retry-After``."""


class ServiceUnavailable(VaultTransientError):
    """``service_unavailable``, a 5xx, a timeout or a connection error."""


class WriteOutcomeUnknown(VaultTransientError):
    """A write's answer was lost or came after the read timeout: it may have landed, or may
    still land. Not a conflict: the caller settles it (re-sends the same check-and-set write,
    at most one of which can land, and reads back). The client never re-sends it by itself."""


class VaultPermanentError(VaultError, PermanentError):
    """A failure that retrying will not fix."""


class AuthenticationRequired(VaultPermanentError):
    """No or an unknown token (``authentication_required``)."""


class TokenExpired(VaultPermanentError):
    """The token expired, also after re-reading ``SCAIVAULT_TOKEN_FILE``."""


class AccessDenied(VaultPermanentError):
    """The token's identity lacks a permission on the path (``access_denied``)."""


class NotFound(VaultPermanentError):
    """The secret (or version) does not exist (``not_found``)."""


class InvalidRequest(VaultPermanentError):
    """ScaiVault rejected the request's shape (``invalid_request`` or an unknown 4xx code)."""


class UnexpectedResponse(VaultPermanentError):
    """ScaiVault answered 2xx with a body that is not the spec's shape (wrong URL, a proxy)."""


class VersionConflict(VaultPermanentError):
    """The ``options.cas`` version no longer matches: someone else wrote first."""


class WebhookRejected(OrchestratorError):
    """A webhook request failed a receiver check: ``status`` is the answer, ``reason`` an enum.

    ``field`` names the offending envelope field for 422s (the sender is authenticated by then).
    """

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(f"webhook rejected: {reason}")
        self.status = status
        self.reason = reason
        self.field = field


class PublishError(OrchestratorError):
    """Claiming and publishing an event failed or timed out; ``reason`` is ``timeout`` or
    ``unavailable``. The outcome may be unknown after a timeout: the claim and the message are
    written by one atomic script, so a redelivery is either a duplicate or a fresh publish."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"could not publish the event to the broker ({reason}); retry later")
        self.reason = reason


class StoreError(OrchestratorError):
    """The run store refused an operation; ``rotation_id`` names the run."""

    def __init__(self, message: str, *, rotation_id: str) -> None:
        super().__init__(message)
        self.rotation_id = rotation_id


class RunNotFound(StoreError):
    """No run record with that rotation id."""


class IllegalTransition(StoreError):
    """The run is in ``state``, from which the requested state may not be reached."""

    def __init__(self, message: str, *, rotation_id: str, state: str) -> None:
        super().__init__(message, rotation_id=rotation_id)
        self.state = state


class LeaseLost(StoreError):
    """Another worker holds this run's lease now; the caller must stop driving it."""


class RunHeld(IllegalTransition):
    """On-call holds the run (e.g. a rollback in grace); nobody else may change it meanwhile."""


class FinalizeTooEarly(IllegalTransition):
    """A run in grace may not be finalized yet: its grace is not over on Redis's clock and
    nobody asked to finalize it early."""


class PathBusy(StoreError):
    """Another rotation holds the path; ``holder`` is its rotation id."""

    def __init__(self, message: str, *, rotation_id: str, holder: str) -> None:
        super().__init__(message, rotation_id=rotation_id)
        self.holder = holder


class RetryLater(OrchestratorError):
    """A transient failure: run the task again after ``countdown`` seconds (never hours)."""

    def __init__(self, message: str, *, rotation_id: str, countdown: float) -> None:
        super().__init__(message)
        self.rotation_id = rotation_id
        self.countdown = countdown


class NeedsAttention(OrchestratorError):
    """The rotation cannot safely go on by itself; a human must look (state needs_attention)."""


class SealError(OrchestratorError):
    """A value cannot be sealed or unsealed (no key, wrong key, tampered or foreign blob)."""


class CommandError(OrchestratorError):
    """An on-call operation that cannot be done, with what to do next and its exit code."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


class StackError(OrchestratorError):
    """A child process did not start, or died while it was expected to run."""


class Untrusted(OrchestratorError):
    """Metadata that cannot be ours as written: why, in words (never the values)."""


def reason_of(exc: BaseException, step: str | None = None) -> str:
    """A one-line, bounded reason for a run record, log line and alert (never a secret value).

    Only our errors and the rotator contract's keep secrets out of their messages, so only
    their text is used; any other exception (a ``ValueError`` from ``int(password)``, a
    client library's error carrying a response body) is named by its type and ``step`` alone.
    """
    name = type(exc).__name__
    if not isinstance(exc, (RotatorError, OrchestratorError)):
        return f"{name} in step {step}" if step else name
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"{name}: {text}" if text else name)[:500]
