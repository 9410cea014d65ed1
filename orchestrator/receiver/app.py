"""The webhook receiver: an ASGI app that verifies, dedupes and enqueues ScaiVault events.

``POST /scaivault/events`` runs the checks in this order and stops at the first failure:
size (``Content-Length``, then while reading; 413) -> content type (415) -> raw bytes, in
full within ``ROTATOR_BODY_TIMEOUT`` (else 408 and the connection is closed) -> signature
against every configured secret (401, one fixed body) -> JSON (400) -> shape (422) -> age of
``created_at`` (400) -> claim the event id and publish in one atomic Redis script (duplicate:
200; Redis down or slow: 503 + ``Retry-After``) -> 202. No request answers 500: anything
unexpected is logged and answered 503 so ScaiVault redelivers.

``GET /healthz`` (process up), ``GET /readyz`` (Redis reachable), ``GET /metrics`` (Prometheus,
the receiver's own registry, summed over its uvicorn worker processes).

The raw request's headers, size and body are checked in :mod:`orchestrator.receiver.request`;
metrics and the accepted-events log are kept in :mod:`orchestrator.receiver.telemetry`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import redis.asyncio
import redis.exceptions
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from orchestrator import connection, tracing
from orchestrator.errors import ConfigError, PublishError, WebhookRejected
from orchestrator.log import configure_logging, get_logger
from orchestrator.receiver import envelope, openapi, publish, signing
from orchestrator.receiver.envelope import Envelope
from orchestrator.receiver.request import (
    check_content_type,
    check_length,
    read_body,
    request_headers,
)
from orchestrator.receiver.telemetry import AcceptedLog, Metrics
from orchestrator.settings import Settings, dedupe_window
from orchestrator.state.messages import RotateRequest

EVENTS_PATH = "/scaivault/events"

#: Seconds ScaiVault is asked to wait before redelivering after a 503.
RETRY_AFTER = 5

#: Seconds an idle keep-alive connection stays open between requests.
KEEP_ALIVE_SECONDS = 5

_ERRORS = {
    400: "malformed_payload",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_event",
}

log = get_logger("orchestrator.receiver.app")


def claim_ttl(max_age: timedelta) -> int:
    """Seconds to keep a dedupe claim: longer than any event we would still accept."""
    return int(dedupe_window(max_age).total_seconds())


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of the events endpoint, sent with two raw ASGI messages."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


_UNAUTHORIZED = Reply(
    401,
    b'{"error":"unauthorized"}',
    ((b"www-authenticate", b'HMAC-SHA256 realm="scaivault-webhook"'),),
)
_CLOSE = ((b"connection", b"close"),)
_UNAVAILABLE = Reply(
    503,
    b'{"error":"temporarily_unavailable"}',
    ((b"retry-after", str(RETRY_AFTER).encode()),),
)


class Receiver:
    """The events endpoint (a raw ASGI app: the hot path skips Request/Response objects) and
    the health, readiness and metrics handlers, bound to settings, a Redis client and metrics."""

    def __init__(self, settings: Settings, client: redis.asyncio.Redis) -> None:
        self.settings = settings
        self.secrets = settings.require_webhook_secrets()
        self.client = client
        self.max_age = settings.event_max_age
        self.publisher = publish.Publisher(
            client,
            claim_ttl=claim_ttl(self.max_age),
            timeout=settings.rotator_publish_timeout,
        )
        self.metrics = Metrics(settings.prometheus_multiproc_dir)
        self.log = log.bind()  # a concrete logger: the lazy proxy re-binds on every call
        self.accepted_log = AcceptedLog(self.log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /scaivault/events``: never raises, never answers 500."""
        started = time.perf_counter()
        fields: dict[str, Any] = {"type": "none"}
        try:
            reply = await self._accept(scope, receive, fields)
        except WebhookRejected as exc:
            reply = self._rejected(exc, fields)
        except PublishError as exc:
            reply = self._unavailable(exc.reason, fields)
        except Exception:
            self.log.exception("event_failed", **fields)
            reply = self._unavailable("internal_error", fields)
        self.metrics.latency.observe(time.perf_counter() - started)
        await reply.send(send)

    async def _accept(self, scope: Scope, receive: Receive, fields: dict[str, Any]) -> Reply:
        length, content_type, signature = request_headers(scope)
        check_length(length)
        check_content_type(content_type)
        body = await read_body(receive, self.settings.rotator_body_timeout)
        fields["body_len"] = len(body)
        position = signing.verify(body, signature, self.secrets)
        fields["secret_position"] = position
        self.metrics.secret_match(position)
        event = envelope.parse(body, now=datetime.now(UTC), max_age=self.max_age)
        fields.update(event_id=event.id, type=_type_label(event.type), path=event.path or None)
        if event.type == envelope.ROTATION_DUE:
            return await self._rotation_due(event, fields)
        if event.type in envelope.RECORDED_TYPES:
            return await self._record(event, fields)
        return self._done(202, "ignored", fields, event_type=event.type)

    async def _rotation_due(self, event: Envelope, fields: dict[str, Any]) -> Reply:
        request = RotateRequest(
            path=event.path,
            trigger=event.trigger,
            event_id=event.id,
            from_version=event.version,
            grace_period=event.grace_period,
            actor="scaivault",
            reason="rotation.due event",
        )
        claim = await self.publisher.publish_task(event.id, request)
        if not claim.fresh:
            return self._done(200, "duplicate", fields)
        return self._done(202, "queued", fields, task_id=claim.value)

    async def _record(self, event: Envelope, fields: dict[str, Any]) -> Reply:
        claim = await self.publisher.record_history(
            event.id,
            event.path,
            event.type,
            event_id=event.id,
            new_version=event.version,
            actor="scaivault",
        )
        if not claim.fresh:
            return self._done(200, "duplicate", fields)
        return self._done(202, "recorded", fields)

    def _done(self, status: int, outcome: str, fields: dict[str, Any], **extra: Any) -> Reply:
        self.metrics.event(fields["type"], outcome)
        self.accepted_log.add(status=status, outcome=outcome, **fields, **extra)
        body = {"status": outcome, "event_id": fields.get("event_id"), **extra}
        return Reply(status, json.dumps(body).encode())

    def _rejected(self, exc: WebhookRejected, fields: dict[str, Any]) -> Reply:
        self.metrics.event(fields["type"], exc.reason)
        self.log.warning("event_rejected", status=exc.status, outcome=exc.reason, **fields)
        if exc.status == 401:
            return _UNAUTHORIZED
        body: dict[str, Any] = {"error": _ERRORS.get(exc.status, "rejected"), "reason": exc.reason}
        if exc.field:
            body["field"] = exc.field
        # the rest of a late body may still arrive: only a new connection starts clean
        headers = _CLOSE if exc.status == 408 else ()
        return Reply(exc.status, json.dumps(body).encode(), headers)

    def _unavailable(self, reason: str, fields: dict[str, Any]) -> Reply:
        self.metrics.event(fields["type"], "unavailable")
        self.metrics.publish_failures.labels(reason).inc()
        self.log.error(
            "event_unavailable", status=503, outcome="unavailable", reason=reason, **fields
        )
        return _UNAVAILABLE

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process is up."""
        return _json(200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: settings loaded (else no app) and Redis answers a PING in time."""
        try:
            async with asyncio.timeout(self.settings.rotator_publish_timeout):
                await self.client.ping()
        except (TimeoutError, redis.exceptions.RedisError, OSError):
            return _json(503, {"status": "unavailable", "redis": "unreachable"})
        return _json(200, {"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text of the receiver's metrics (every process's)."""
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _openapi(request: Request) -> Response:
    return _json(200, openapi.document())


def _type_label(event_type: str) -> str:
    return event_type if event_type in envelope.KNOWN_TYPES else "unknown"


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body).encode(), status, media_type="application/json")


def redis_client(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio Redis client bounded by the publish timeout and without silent retries.

    No retries: after a lost reply the script's outcome is unknown, and the sender's
    redelivery (after our 503) is the one retry that reports the outcome honestly.
    """
    timeout = settings.rotator_publish_timeout
    return connection.async_redis_client(
        settings.redis_url,
        master=settings.redis_sentinel_master,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def create_app(settings: Settings, redis: redis.asyncio.Redis | None = None) -> Starlette:
    """The receiver's ASGI app. Raises :class:`ConfigError` without a webhook secret."""
    client = redis if redis is not None else redis_client(settings)
    receiver = Receiver(settings, client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("receiver_started", secrets=len(receiver.secrets), path=EVENTS_PATH)
        yield
        await client.aclose()

    routes = [
        Route(EVENTS_PATH, receiver, methods=["POST"]),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/readyz", receiver.readyz, methods=["GET"]),
        Route("/metrics", receiver.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
    ]
    app = ReceiverApp(receiver, routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False  # senders must never see a 3xx (some give up on it)
    app.state.receiver = receiver
    return app


class ReceiverApp(Starlette):
    """Starlette for the side endpoints; ``POST /scaivault/events`` goes straight to the
    receiver, skipping the router and middleware stack on the hot path."""

    def __init__(self, receiver: Receiver, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == EVENTS_PATH and scope["method"] == "POST":
            await self.receiver(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def app_factory() -> Any:
    """Build the app from the environment (what each uvicorn worker process calls), traced
    when the ``OTEL_*`` variables ask for it."""
    settings = Settings.load()
    configure_logging(settings.rotator_log_level, settings.rotator_log_format)
    tracing.configure("receiver")
    return tracing.instrument_asgi(create_app(settings))


def serve(host: str, port: int, workers: int = 1) -> None:
    """Run the receiver on uvicorn; refuse (exit 2) when the configuration is unusable."""
    import uvicorn

    try:
        settings = Settings.load()
        settings.require_webhook_secrets()
        redis_client(settings)  # refuses URLs it cannot serve; connects only on first use
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.rotator_log_level, settings.rotator_log_format)
    with _metrics_directory(settings, workers):
        uvicorn.run(
            "orchestrator.receiver.app:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=shutdown_seconds(settings),
        )


@contextmanager
def _metrics_directory(settings: Settings, workers: int) -> Iterator[None]:
    """With several worker processes, a fresh ``PROMETHEUS_MULTIPROC_DIR`` for them to share
    (the operator's, emptied, else a temporary one): prometheus_client then sums their counters.
    """
    directory = settings.prometheus_multiproc_dir
    if workers <= 1 and directory is None:
        yield
        return
    temporary = directory is None
    path = Path(tempfile.mkdtemp(prefix="scaivault-receiver-metrics-")) if temporary else directory
    assert path is not None
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # read by each worker process's settings
    try:
        yield
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def shutdown_seconds(settings: Settings) -> int:
    """How long a stopping receiver waits for requests in flight: the longest one takes the
    body deadline plus the publish timeout. Past it, uvicorn cancels what is left."""
    return math.ceil(settings.rotator_body_timeout + settings.rotator_publish_timeout) + 1
