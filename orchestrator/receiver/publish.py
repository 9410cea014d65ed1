"""Claim-and-publish: Celery protocol-2 messages pushed straight onto the Redis broker list.

The receiver does not call Celery's ``send_task``: building a Celery message and a kombu Redis
client per publish costs ~0.7 ms of CPU under the GIL, and kombu's producer can block for a long
time while Redis is away. Instead :func:`~orchestrator.state.messages.task_message` builds the exact
envelope kombu's Redis transport would ``LPUSH`` (protocol 2, JSON body, base64 body encoding,
priority 0 on the list named by the queue), and one Lua script (``state/lua/event_publish.lua``)
claims the event id (``SET NX EX``) and pushes the message atomically, in one round trip, awaited
under a hard timeout. The same script records the event in the pending events
(:mod:`orchestrator.state.pending`), so an accepted event whose message is lost later (a worker
killed between taking it and its bookkeeping, a task that gave up) is published again by the sweep
until it has a run record.

Why a timeout is safe: the claim and the message are written by one atomic script, so the claim
exists if and only if the message was pushed. When the outcome is unknown (the timeout fired
after the script was sent), the receiver answers 503; ScaiVault's redelivery then either finds
the claim (200 duplicate — the first attempt did publish) or claims and publishes afresh.
There is no window in which a claim without a message, or a message without a claim, exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.exceptions import NoScriptError

from orchestrator import tracing
from orchestrator.errors import PublishError
from orchestrator.state import history, keys, scripts
from orchestrator.state.messages import RotateRequest, Task, task_message

#: Pipelines a :class:`ScriptBatch` keeps in flight at once (overlaps Redis and our CPU work).
MAX_IN_FLIGHT = 2


@dataclass(frozen=True)
class Claim:
    """Outcome of a claim-and-write: ``fresh`` False means the event id was already claimed."""

    fresh: bool
    value: str


class ScriptBatch:
    """Group commit for one Lua script: calls made while a pipeline is in flight go out together
    in the next pipeline (one write, one connection checkout), so under load each request pays a
    fraction of the client's per-command cost. Each call is still one atomic script run.

    A script missing from Redis's cache (after a restart) is loaded and only the calls Redis
    refused with ``NOSCRIPT`` (which therefore did not run) are sent again.
    """

    def __init__(
        self, client: redis.asyncio.Redis, script: str, *, in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self.in_flight = in_flight
        self._pending: list[_Call] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self._starting = False

    async def __call__(self, script_keys: list[str], args: list[Any]) -> Any:
        """Run the script once with ``script_keys`` and ``args``; return its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(script_keys, args, future))
        if not self._starting and len(self._drainers) < self.in_flight:
            # One new pipeline per loop iteration at most: calls made in the same iteration
            # share it; while ``in_flight`` pipelines are out, calls wait for the next one.
            self._starting = True
            task = asyncio.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        self._starting = False
        while self._pending:
            # Calls whose request already timed out (and answered 503) are not sent late.
            batch = [call for call in self._pending if not call.future.done()]
            self._pending = []
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
        except Exception as exc:
            results = [exc] * len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.future.done():  # its request timed out and was answered already
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        results = await self._pipeline(batch)
        missing = [n for n, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self.client.script_load(self.script)
            retried = await self._pipeline([batch[n] for n in missing])
            for n, result in zip(missing, retried, strict=True):
                results[n] = result
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.evalsha(self.sha, len(call.keys), *call.keys, *call.args)
            return list(await pipe.execute(raise_on_error=False))


@dataclass(frozen=True)
class _Call:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


class Publisher:
    """Claims event ids and writes their effect (a task message or a history entry) atomically.

    Every call is bounded by ``timeout`` seconds; failures and timeouts raise
    :class:`~orchestrator.errors.PublishError`.
    """

    def __init__(self, client: redis.asyncio.Redis, *, claim_ttl: int, timeout: float) -> None:
        self.client = client
        self.claim_ttl = claim_ttl
        self.timeout = timeout
        self._publish = ScriptBatch(client, scripts.source("event_publish"))
        self._record = ScriptBatch(client, scripts.source("event_record"))

    async def publish_task(
        self, event_id: str, request: RotateRequest, queue: str = keys.TASK_QUEUE
    ) -> Claim:
        """Claim ``event_id``, add it to the pending events and push ``request``'s message, in
        one atomic script (the pending entry lives until the event has a durable outcome)."""
        trace = tracing.carrier()
        task_id, message = task_message(Task.ROTATE, request.to_kwargs(), queue=queue, trace=trace)
        args = [task_id, self.claim_ttl, message, event_id, int(time.time() * 1000)]
        script_keys = [keys.event(event_id), queue, keys.PENDING, keys.PENDING_MESSAGES]
        return await self._run(self._publish, script_keys, args)

    async def record_history(self, claim_id: str, path: str, event: str, **fields: Any) -> Claim:
        """Claim event id ``claim_id`` and append an entry to ``path``'s history, atomically."""
        pairs = [item for kv in history.entry(event, **fields).items() for item in kv]
        args = ["recorded", self.claim_ttl, history.MAX_ENTRIES, *pairs]
        return await self._run(self._record, [keys.event(claim_id), keys.history(path)], args)

    async def _run(self, script: ScriptBatch, script_keys: list[str], args: list[Any]) -> Claim:
        try:
            async with asyncio.timeout(self.timeout):
                fresh, value = await script(script_keys, args)
        except TimeoutError:
            raise PublishError("timeout") from None
        except (redis.exceptions.RedisError, OSError):
            raise PublishError("unavailable") from None
        return Claim(fresh=bool(fresh), value=_text(value))


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""
