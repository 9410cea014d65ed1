"""Signed webhook delivery with retries, an attempt log and re-delivery of past events.

Each event is serialized once; every attempt and every re-delivery sends the same bytes, signed
with ``X-ScaiVault-Signature`` = hex HMAC-SHA256(subscription secret as UTF-8, raw body).
Deliveries run as asyncio tasks, never inside the API request that caused them; each waits for
its ``gate`` first (the emulator's state-file write), so no event announces a change that a
crash could still lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from orchestrator.local.emulator.pattern import any_match
from orchestrator.local.emulator.state import Subscription, iso
from orchestrator.log import get_logger

log = get_logger("orchestrator.local.emulator.delivery")

MAX_LOG = 20_000
MAX_EVENTS = 10_000


@dataclass
class DeliveryConfig:
    """How hard to try: pause before each retry (its length is the retry count), timeouts."""

    retry_schedule: list[float] = field(default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0])
    delivery_timeout: float = 5.0
    max_retry_after: float = 600.0


@dataclass(frozen=True)
class Target:
    """Where one event goes: a subscription's URL and signing secret."""

    subscription_id: str
    url: str
    secret: str


@dataclass
class Event:
    """An event as sent: its envelope fields, the exact body bytes and its targets."""

    id: str
    type: str
    path: str
    body: bytes
    targets: list[Target]


def sign(secret: str, body: bytes) -> str:
    """The ``X-ScaiVault-Signature`` value for ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(event_type: str, path: str, data: dict[str, Any]) -> tuple[str, bytes]:
    """A new event id and the JSON body of the event envelope
    (docs/operating.md#webhook-receiver)."""
    event_id = "evt_" + secrets.token_hex(12)
    body = {
        "id": event_id,
        "type": event_type,
        # Real time, not the emulator clock: receivers judge freshness against their own clock.
        "created_at": iso(datetime.now(UTC)),
        "path": path,
        "data": data,
    }
    return event_id, json.dumps(body, separators=(",", ":")).encode()


def subscribed(subscription: Subscription, event_type: str, path: str) -> bool:
    """True when ``subscription`` wants events of ``event_type`` on ``path``."""
    wants_type = event_type in subscription.events or "*" in subscription.events
    return wants_type and any_match(subscription.paths, path)


class Dispatcher:
    """Sends events to subscribers in the background and logs every attempt."""

    def __init__(self, config: DeliveryConfig | None = None) -> None:
        self.config = config or DeliveryConfig()
        self.attempts: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)
        self.events: OrderedDict[str, Event] = OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()
        self.gate: Callable[[], Awaitable[None]] | None = None
        self._client: httpx.AsyncClient | None = None

    def publish(
        self,
        event_type: str,
        path: str,
        data: dict[str, Any],
        subscriptions: list[Subscription],
    ) -> str:
        """Create an event and start delivering it to every matching subscription."""
        event_id, body = envelope(event_type, path, data)
        targets = [
            Target(s.id, s.url, s.secret) for s in subscriptions if subscribed(s, event_type, path)
        ]
        event = Event(event_id, event_type, path, body, targets)
        self.events[event_id] = event
        while len(self.events) > MAX_EVENTS:
            self.events.popitem(last=False)
        # Every write publishes; only events someone subscribed to are worth an info line.
        (log.info if targets else log.debug)(
            "event_published", event_id=event_id, type=event_type, path=path, targets=len(targets)
        )
        for target in targets:
            self._spawn(self._deliver(event, target, redelivery=False))
        return event_id

    def redeliver(self, event_id: str, times: int, concurrent: bool) -> Event | None:
        """Send a past event again ``times`` times to each of its targets (same bytes, same id)."""
        event = self.events.get(event_id)
        if event is None:
            return None
        for target in event.targets:
            if concurrent:
                for _ in range(times):
                    self._spawn(self._deliver(event, target, redelivery=True))
            else:
                self._spawn(self._repeat(event, target, times))
        return event

    def pending(self) -> int:
        """How many deliveries are still running or waiting to retry."""
        return len(self.tasks)

    def clear(self) -> None:
        """Forget all events and attempts and cancel deliveries in flight."""
        for task in list(self.tasks):
            task.cancel()
        self.attempts.clear()
        self.events.clear()

    async def close(self) -> None:
        """Cancel deliveries in flight and close the HTTP client."""
        self.clear()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    async def _repeat(self, event: Event, target: Target, times: int) -> None:
        for _ in range(times):
            await self._deliver(event, target, redelivery=True)

    async def _pass_gate(self, event: Event) -> None:
        if self.gate is None:
            return
        try:
            await self.gate()
        except Exception as exc:  # the request that made the change answers with the error
            log.warning("delivery_gate_failed", event_id=event.id, reason=type(exc).__name__)

    async def _deliver(self, event: Event, target: Target, redelivery: bool) -> None:
        await self._pass_gate(event)
        attempt = 0
        while True:
            attempt += 1
            status, retry_after = await self._attempt(event, target, attempt, redelivery)
            if status is not None and 200 <= status < 300:
                return
            schedule = self.config.retry_schedule
            if attempt > len(schedule):
                log.warning("delivery_gave_up", event_id=event.id, url=target.url, attempt=attempt)
                return
            delay = schedule[attempt - 1]
            if retry_after is not None and status in (429, 503):
                delay = min(retry_after, self.config.max_retry_after)
            await asyncio.sleep(delay)

    async def _attempt(
        self, event: Event, target: Target, attempt: int, redelivery: bool
    ) -> tuple[int | None, float | None]:
        headers = {
            "Content-Type": "application/json",
            "X-ScaiVault-Signature": sign(target.secret, event.body),
            "User-Agent": "scaivault-emulator",
        }
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await self.client.post(
                target.url,
                content=event.body,
                headers=headers,
                timeout=self.config.delivery_timeout,
            )
            status = response.status_code
            retry_after = _retry_after(response.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self._record(event, target, attempt, redelivery, status, error)
        return status, retry_after

    def _record(
        self,
        event: Event,
        target: Target,
        attempt: int,
        redelivery: bool,
        status: int | None,
        error: str | None,
    ) -> None:
        ok = status is not None and 200 <= status < 300
        self.attempts.append(
            {
                "event_id": event.id,
                "type": event.type,
                "path": event.path,
                "subscription_id": target.subscription_id,
                "url": target.url,
                "attempt": attempt,
                "redelivery": redelivery,
                "status": status,
                "error": error,
                "ok": ok,
                "at": iso(datetime.now(UTC)),
            }
        )
        (log.debug if ok else log.info)(
            "delivery_attempted",
            event_id=event.id,
            url=target.url,
            attempt=attempt,
            status=status,
            reason=error,
        )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
