"""The emulator's API errors: ScaiVault's error codes with their HTTP statuses.

OrchestratorError
 +-- ApiError          answered as {"error": {"code", "message"}} with ``status``
      +-- ConnectionDropped   not an answer: the connection is closed instead (fault injection)
"""

from __future__ import annotations

import math

from orchestrator.errors import OrchestratorError

STATUS_BY_CODE = {
    "authentication_required": 401,
    "token_expired": 401,
    "access_denied": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_request": 400,
    "payload_too_large": 413,
    "version_conflict": 409,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}


class ApiError(OrchestratorError):
    """An error answer in the spec's shape; ``retry_after`` (seconds) becomes a header."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE.get(code, 400)
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON body ScaiVault sends for this error."""
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """``Retry-After`` for rate limiting and unavailability, else nothing."""
        if self.retry_after is None:
            return {}
        # delta-seconds must be a whole number (RFC 9110; the spec's client does int(...)).
        return {"Retry-After": str(max(0, math.ceil(self.retry_after)))}


class ConnectionDropped(OrchestratorError):
    """Raised after a response has started, so uvicorn closes the connection mid-answer."""


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request`` saying what was wrong."""
    return ApiError("invalid_request", message)


def not_found(message: str) -> ApiError:
    """A 404 ``not_found``."""
    return ApiError("not_found", message)
