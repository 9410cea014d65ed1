"""The one place where ScaiVault's answers and httpx's exceptions become our exceptions.

:func:`raise_for_error` maps a response's error code (or, without a known code, its status) to
the tree in :mod:`orchestrator.errors`; :func:`transport_error` translates httpx's own
exceptions, and never re-sends a write that may have reached ScaiVault: it becomes
:class:`~orchestrator.errors.WriteOutcomeUnknown`. Messages carry a hint naming the path and
the permission the request needed, and never a body that could echo secret data.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from orchestrator.errors import (
    AccessDenied,
    AuthenticationRequired,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenExpired,
    VaultError,
    VersionConflict,
    WriteOutcomeUnknown,
)

#: Longest ``Retry-After`` we wait, in seconds, whatever the server asks.
RETRY_AFTER_CAP = 30.0

_CODE_ERRORS: dict[str, type[VaultError]] = {
    "rate_limited": RateLimited,
    "service_unavailable": ServiceUnavailable,
    "authentication_required": AuthenticationRequired,
    "token_expired": TokenExpired,
    "access_denied": AccessDenied,
    "not_found": NotFound,
    "invalid_request": InvalidRequest,
    "version_conflict": VersionConflict,
}
_STATUS_CODES = {
    401: "authentication_required",
    403: "access_denied",
    404: "not_found",
    409: "version_conflict",
    429: "rate_limited",
}
# Raised before the request reached the server: re-sending even a write is safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Call:
    """What a request is for, so an error can name the path and the permission it needed."""

    method: str
    path: str
    permission: str

    @property
    def resend_safe(self) -> bool:
        """GETs may be re-sent after a lost response; writes and triggers may not."""
        return self.method == "GET"


def error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """The spec's ``{"error": {"code", "message"}}``, tolerating bodies that are not JSON."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None, ""
    if not isinstance(error, Mapping):
        return None, ""
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else "")


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), capped at RETRY_AFTER_CAP."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _hint(code: str, call: Call, response: httpx.Response) -> str:
    where = f"{call.method} {call.path!r}"
    hints = {
        "rate_limited": f"ScaiVault is rate limiting {where}; retry later",
        "service_unavailable": f"ScaiVault is unavailable for {where} "
        f"(HTTP {response.status_code}); retry later",
        "authentication_required": f"ScaiVault did not accept the token for {where}: set "
        f"SCAIVAULT_TOKEN or SCAIVAULT_TOKEN_FILE to a valid token with '{call.permission}' "
        f"permission on {call.path!r}",
        "token_expired": "the ScaiVault token expired, also after re-reading it; put a fresh "
        "token in SCAIVAULT_TOKEN_FILE (re-read automatically) or SCAIVAULT_TOKEN and restart",
        "access_denied": f"ScaiVault denied {where}: the token's identity lacks "
        f"'{call.permission}' permission on {call.path!r}; bind it to a policy granting it",
        "not_found": f"ScaiVault has no secret (or version) at {call.path!r}",
        "version_conflict": f"{where} lost a race: the secret changed since it was read "
        "(options.cas no longer matches); read it again",
    }
    return hints.get(code, f"ScaiVault rejected {where} (HTTP {response.status_code})")


def raise_for_error(response: httpx.Response, call: Call) -> None:
    """Raise the exception for an error response; do nothing for a 2xx.

    The error code decides; without a known code the status does (5xx is transient, other
    unknown 4xx are :class:`InvalidRequest`). ScaiVault's own message is quoted only for reads:
    an answer to a write might echo the data we sent.
    """
    if response.is_success:
        return
    status = response.status_code
    code, server_message = error_fields(response)
    if code not in _CODE_ERRORS:
        fallback = "service_unavailable" if status >= 500 else _STATUS_CODES.get(status)
        code = code or fallback or "invalid_request"
        kind = _CODE_ERRORS.get(fallback or "invalid_request", InvalidRequest)
    else:
        kind = _CODE_ERRORS[code]
    message = f"{_hint(code, call, response)} ({code})"
    if server_message and call.resend_safe:
        message += f": {server_message[:200]}"
    raise kind(message, code=code, status=status, path=call.path, retry_after=retry_after(response))


def transport_error(exc: httpx.HTTPError, call: Call) -> VaultError:
    """Translate an httpx exception (its text never holds a body) into our tree."""
    name = type(exc).__name__
    if not call.resend_safe and not isinstance(exc, _NOT_SENT):
        return WriteOutcomeUnknown(
            f"the response to {call.method} {call.path!r} was lost ({name}); it may or may not "
            "have been applied: read the secret back and check whether the new version is yours",
            code="outcome_unknown",
            path=call.path,
        )
    if isinstance(exc, httpx.TransportError):
        return ServiceUnavailable(
            f"cannot reach ScaiVault for {call.method} {call.path!r} ({name}); check "
            "SCAIVAULT_URL and the network, retrying",
            code="service_unavailable",
            path=call.path,
        )
    return InvalidRequest(
        f"could not send {call.method} {call.path!r} to ScaiVault ({name}); check SCAIVAULT_URL",
        code="invalid_request",
        path=call.path,
    )
