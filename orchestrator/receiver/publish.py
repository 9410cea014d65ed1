"""Claim-and-publish: Celery protocol-2 messages pushed straight onto the Redis broker list.

The receiver does not call Celery's ``send_task``: building a Celery message and a kombu Redis
client per publish costs ~0.7 ms of CPU under the GIL, and kombu's producer can block for a long
time while Redis is away. Instead :func:`task_message` builds the exact envelope kombu's Redis
transport would ``LPUSH`` (protocol 2, JSON body, base64 body encoding, priority 0 on the list
named by the queue), and one Lua script claims the event id (``SET NX EX``) and pushes the
message atomically, in one round trip, awaited under a hard timeout. The same script records
the event in the pending ledger (:mod:`orchestrator.state.pending`), so an accepted event whose
message is lost later (a worker killed between taking it and its bookkeeping, a task that gave up)
is published again by the sweep until it has a run record.

Why a timeout is safe: the claim and the message are written by one atomic script, so the claim
exists if and only if the message was pushed. When the outcome is unknown (the timeout fired
after the script was sent), the receiver answers 503; ScaiVault's redelivery then either finds
the claim (200 duplicate — the first attempt did publish) or claims and publishes afresh.
There is no window in which a claim without a message, or a message without a claim, exists.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.exceptions import NoScriptError

from orchestrator.errors import PublishError
from orchestrator.state import history, keys

#: The Celery task the receiver publishes (DESIGN §8).
ROTATE_TASK = "scaivault.rotate"

# KEYS[1] claim key, KEYS[2] target (broker list or history stream); for a list also
# KEYS[3] the pending ledger's ZSET and KEYS[4] its message hash (orchestrator.state.pending).
# ARGV[1] claim value, ARGV[2] claim TTL in seconds, ARGV[3] 'list' or 'stream',
# ARGV[4] the message (list) or the stream's approximate max length (stream),
# list: ARGV[5] the event id, ARGV[6] the time in ms; stream: ARGV[5..] the entry's field/values.
# Returns {1, claim} when claimed and written, {0, existing claim} for a duplicate. If a write
# fails (e.g. OOM) the claim and ledger entry are deleted in the same script and the error is
# returned. The message is pushed last, so a failed push leaves nothing behind.
CLAIM_AND_WRITE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1])}
end
local res
if ARGV[3] == 'list' then
  res = redis.pcall('HSET', KEYS[4], ARGV[5], ARGV[4])
  if not (type(res) == 'table' and res.err) then
    res = redis.pcall('ZADD', KEYS[3], ARGV[6], ARGV[5])
  end
  if not (type(res) == 'table' and res.err) then
    res = redis.pcall('LPUSH', KEYS[2], ARGV[4])
  end
  if type(res) == 'table' and res.err then
    redis.call('HDEL', KEYS[4], ARGV[5])
    redis.call('ZREM', KEYS[3], ARGV[5])
  end
else
  res = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
if type(res) == 'table' and res.err then
  redis.call('DEL', KEYS[1])
  return res
end
return {1, ARGV[1]}
"""

#: Pipelines a :class:`ScriptBatch` keeps in flight at once (overlaps Redis and our CPU work).
MAX_IN_FLIGHT = 2

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_REPLY_TO = str(uuid.uuid4())
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class Claim:
    """Outcome of a claim-and-write: ``fresh`` False means the event id was already claimed."""

    fresh: bool
    value: str


def rotate_kwargs(
    *,
    path: str,
    event_id: str,
    from_version: int | None,
    grace_period: str | None,
    trigger: str = "schedule",
    actor: str = "scaivault",
    reason: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``scaivault.rotate`` (ids and paths only, never secret data)."""
    return {
        "path": path,
        "trigger": trigger,
        "event_id": event_id,
        "from_version": from_version,
        "grace_period": grace_period,
        "actor": actor,
        "reason": reason,
    }


def task_message(
    task: str,
    kwargs: Mapping[str, Any],
    *,
    task_id: str | None = None,
    queue: str = keys.TASK_QUEUE,
) -> tuple[str, bytes]:
    """Return ``(task_id, payload)``: the bytes kombu's Redis transport would ``LPUSH`` for
    ``send_task(task, kwargs=kwargs, queue=queue)`` (Celery protocol 2, JSON, priority 0).

    The envelope is filled into a pre-serialised template (a third of the cost of dumping the
    nested dicts each time); a unit test keeps it equal to what Celery and kombu produce.
    """
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([[], dict(kwargs), _EMBED]).encode()
    payload = _template(task, queue) % {
        "body": base64.b64encode(body).decode("ascii"),
        "id": _json_chars(task_id),
        "kwargsrepr": _json_chars(repr(dict(kwargs))),
        "tag": str(uuid.uuid4()),
    }
    return task_id, payload.encode()


def _json_chars(text: str) -> str:
    """``text`` escaped for the inside of a JSON string."""
    return json.dumps(text)[1:-1]


@functools.cache
def _template(task: str, queue: str) -> str:
    """The kombu Redis envelope of a Celery protocol-2 message for ``task`` on ``queue``, with
    ``%(body)s``, ``%(id)s``, ``%(kwargsrepr)s`` and ``%(tag)s`` slots inside JSON strings."""
    marker = "\x00slot:%s\x00"
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": marker % "id",
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": marker % "id",
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": marker % "kwargsrepr",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": marker % "body",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": marker % "id",
            "reply_to": _REPLY_TO,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": marker % "tag",
        },
    }
    text = json.dumps(envelope).replace("%", "%%")
    return re.sub(r"\\u0000slot:(\w+)\\u0000", r"%(\1)s", text)


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
        self._script = ScriptBatch(client, CLAIM_AND_WRITE)

    async def publish_task(
        self, event_id: str, task: str, kwargs: Mapping[str, Any], queue: str = keys.TASK_QUEUE
    ) -> Claim:
        """Claim ``event_id``, record it in the pending ledger and push ``task``'s message, in
        one atomic script (the ledger entry lives until the event has a durable outcome)."""
        task_id, message = task_message(task, kwargs, queue=queue)
        args = [task_id, self.claim_ttl, "list", message, event_id, int(time.time() * 1000)]
        script_keys = [keys.event(event_id), queue, keys.PENDING, keys.PENDING_MESSAGES]
        return await self._run(script_keys, args)

    async def record_history(self, claim_id: str, path: str, event: str, **fields: Any) -> Claim:
        """Claim event id ``claim_id`` and append an entry to ``path``'s history, atomically."""
        pairs = [item for kv in history.entry(event, **fields).items() for item in kv]
        args = ["recorded", self.claim_ttl, "stream", history.MAX_ENTRIES, *pairs]
        return await self._run([keys.event(claim_id), keys.history(path)], args)

    async def _run(self, script_keys: list[str], args: list[Any]) -> Claim:
        try:
            async with asyncio.timeout(self.timeout):
                fresh, value = await self._script(script_keys, args)
        except TimeoutError:
            raise PublishError("timeout") from None
        except (redis.exceptions.RedisError, OSError):
            raise PublishError("unavailable") from None
        return Claim(fresh=bool(fresh), value=_text(value))


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return value or ""
