"""Fault injection: make matching API requests slow, fail with a spec error, or lose the answer.

Rules are tried in the order they were added; the first that matches a request (and wins its
``probability`` draw) hits it and uses up one of its ``count``. Control endpoints under
``/v1/_emulator/`` are never faulted, so a test can always clear faults again.

``code`` is any spec error code, or one of two connection faults:

- ``drop_response``: the request is carried out (a write lands), then the connection is closed
  before a complete answer, as when a response is lost on the way back;
- ``drop_request``: the connection is closed without carrying out the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.local.emulator.errors import STATUS_BY_CODE, ApiError, ConnectionDropped
from orchestrator.local.emulator.pattern import glob_match

DROP_CODES = ("drop_response", "drop_request")
EXEMPT_PREFIXES = ("/v1/_emulator/", "/healthz")
SECRET_PREFIX = "/v1/secrets/"


@dataclass
class Fault:
    """One fault rule; ``count`` ``None`` means until cleared."""

    id: str
    match: str = "**"
    code: str | None = None
    status: int | None = None
    count: int | None = None
    retry_after: float | None = None
    latency: float = 0.0
    methods: list[str] | None = None
    probability: float | None = None
    hits: int = 0

    def matches(self, method: str, request_path: str) -> bool:
        """True when this rule applies to ``method`` on ``request_path``."""
        if self.count is not None and self.hits >= self.count:
            return False
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        if not any(glob_match(self.match, p) for p in candidate_paths(request_path)):
            return False
        return self.probability is None or random.random() < self.probability

    def error(self) -> ApiError:
        """The error answer this rule produces (``code`` must be a spec code)."""
        code = self.code or "service_unavailable"
        return ApiError(
            code,
            f"injected fault {self.id}",
            status=self.status or STATUS_BY_CODE.get(code, 400),
            retry_after=self.retry_after,
        )


def candidate_paths(request_path: str) -> list[str]:
    """What a fault's ``match`` is tried against: the secret path and the request path."""
    paths = [request_path, request_path.lstrip("/")]
    if request_path.startswith(SECRET_PREFIX):
        secret = unquote(request_path[len(SECRET_PREFIX) :])
        for suffix in ("/versions", "/rotate"):
            secret = secret.removesuffix(suffix)
        paths.append(secret)
    return paths


class FaultBook:
    """The active fault rules."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, spec: dict[str, Any]) -> Fault:
        """Add a rule from a validated ``FaultBody`` dict; 400 for an unknown code."""
        code = spec.get("code")
        if code is not None and code not in STATUS_BY_CODE and code not in DROP_CODES:
            known = ", ".join([*STATUS_BY_CODE, *DROP_CODES])
            raise ApiError("invalid_request", f"code: unknown fault code; use one of {known}")
        fault = Fault(id="flt_" + secrets.token_hex(6), **spec)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def pick(self, method: str, path: str) -> Fault | None:
        """The rule that hits this request (its hit is counted), or ``None``."""
        if path.startswith(EXEMPT_PREFIXES):
            return None
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                return fault
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.faults]


class FaultMiddleware:
    """ASGI middleware applying the :class:`FaultBook` to each HTTP request."""

    def __init__(self, app: ASGIApp, book: FaultBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = self.book.pick(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.latency:
            # Take the whole request in first, as a server would before working on it: the
            # request is then carried out after the delay even if the client gave up waiting.
            receive = await _buffered(receive)
            await asyncio.sleep(fault.latency)
        if fault.code is None:
            await self.app(scope, receive, send)
        elif fault.code == "drop_request":
            await _drain(receive)  # closing on unread data would turn the drop into a reset
            await _drop(send)
        elif fault.code == "drop_response":
            await self.app(scope, receive, _swallow)
            await _drop(send)
        else:
            await _answer(send, fault.error())


async def _buffered(receive: Receive) -> Receive:
    """Read the body now; the returned ``receive`` replays it, then defers to the real one."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _swallow(message: Message) -> None:
    """Discard the real answer of a request whose response is to be lost."""


async def _drop(send: Send) -> None:
    # Start an answer that promises a body, then raise: uvicorn closes the connection, and the
    # client sees the connection end mid-response (no status it could act on).
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")],
        }
    )
    raise ConnectionDropped("injected drop")


async def _answer(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DropFilter(logging.Filter):
    """Keep uvicorn from logging a traceback for every injected connection drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)
