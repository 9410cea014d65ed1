"""What the receiver reads from a raw ASGI request before trusting it: headers, size, body.

Each check raises :class:`~orchestrator.errors.WebhookRejected` with the status to answer:
a ``Content-Length`` over :data:`MAX_BODY` (413) or not a number (400), a media type other
than JSON in UTF-8 (415), a body that grows past :data:`MAX_BODY` while read (413), stops
early (400) or is not complete in time (408).
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope

from orchestrator.errors import WebhookRejected

#: Largest body accepted, checked on ``Content-Length`` and again while reading.
MAX_BODY = 64 * 1024


def check_length(value: str | None) -> None:
    """413 when ``Content-Length`` announces more than :data:`MAX_BODY`; 400 if it is garbage."""
    if value is None:
        return
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise WebhookRejected(400, "bad_content_length")
    if int(value) > MAX_BODY:
        raise WebhookRejected(413, "too_large")


def check_content_type(value: str | None) -> None:
    """415 unless the media type is ``application/json`` with at most ``charset=utf-8``."""
    media, *params = (value or "").split(";")
    if media.strip().lower() != "application/json":
        raise WebhookRejected(415, "unsupported_media_type")
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() != "charset" or val.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            raise WebhookRejected(415, "unsupported_media_type")


def request_headers(scope: Scope) -> tuple[str | None, str | None, str]:
    """``Content-Length``, ``Content-Type`` and the signature header(s), joined by commas."""
    length = content_type = None
    signatures = []
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"x-scaivault-signature":
            signatures.append(value.decode("latin-1"))
    return length, content_type, ",".join(signatures)


async def read_body(receive: Receive, timeout: float) -> bytes:
    """The raw body, refusing (413) as soon as more than :data:`MAX_BODY` bytes arrive and
    (408) when it is not complete within ``timeout`` seconds: a client that stalls mid-body
    must not hold a connection, a file descriptor and a task for ever."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_chunks(receive)
    except TimeoutError:
        raise WebhookRejected(408, "body_timeout") from None


async def _read_chunks(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise WebhookRejected(400, "client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise WebhookRejected(413, "too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
