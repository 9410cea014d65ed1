"""The fake Salesforce's error answers: :class:`ApiError` and the canned faults tests inject."""

from __future__ import annotations

from typing import Any

#: Canned faults: HTTP status, Salesforce errorCode, message.
FAULT_KINDS: dict[str, tuple[int, str, str]] = {
    "limit_exceeded": (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    "unavailable": (503, "SERVER_UNAVAILABLE", "Server temporarily unavailable."),
    "expired_session": (401, "INVALID_SESSION_ID", "Session expired or invalid"),
}


class ApiError(Exception):
    """A Salesforce error answer: REST errors are lists, OAuth ones ``error``/``description``."""

    def __init__(self, status: int, code: str, message: str, *, oauth: bool = False) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.oauth = oauth

    def body(self) -> Any:
        if self.oauth:
            return {"error": self.code, "error_description": self.message}
        return [{"message": self.message, "errorCode": self.code}]
