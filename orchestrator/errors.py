"""Exceptions of the orchestrator. Messages name what went wrong and what to do; never a secret.

    OrchestratorError
     +-- ConfigError                    settings or routing file unusable (CLI exit 2)
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
     +-- WebhookRejected                a webhook request failed a receiver check (HTTP status
     |                                  and a reason enum; never the body or the signature)
     +-- PublishError                   the receiver could not claim and publish an event in
                                        time (Redis down or slow): the request answers 503

VaultTransientError and VaultPermanentError also derive from the rotators' TransientError and
PermanentError, so a rotator that reads ScaiVault and every layer above share one split.
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
