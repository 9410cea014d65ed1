"""The pending ledger: accepted webhook events that have no durable outcome yet.

The receiver's claim script (:mod:`orchestrator.receiver.publish`) records every accepted
``rotation.due`` here (event id -> its Celery message, which holds ids and paths only, plus a
sorted set scored by the time of the last publish) atomically with the dedupe claim and the
push. The rotate task :meth:`Ledger.settle`\\ s the entry once the engine has a run record for
the event or recorded a decision (skipped, merged, duplicate). Until then the message can be
lost without a trace: a worker SIGKILLed between kombu's ``BRPOP`` and its unacked
bookkeeping, or a task that raised before the run record existed. A task that retries
(:meth:`Ledger.touch`) or gives up (:func:`give_up`) before then says so itself.

The sweep (:func:`sweep_pending`) looks at entries older than
``ROTATOR_PENDING_REPUBLISH_AFTER``: a message still on the queue or held by a worker (kombu's
``unacked`` hash) is only waiting, so its score is bumped; a message that is in neither place
was lost and is published again (a fresh task id and delivery tag, same arguments). A message
kombu restored from ``unacked`` is serialised anew, so while it waits on the queue it can look
lost and be published once more. Publishing twice is safe: a scheduled rotation's id derives
from (path, version) and the engine merges duplicates. After ``ROTATOR_MAX_ATTEMPTS``
re-publishes the event gets a ``failed`` run record with a reason, metric, history entry and
alert, and leaves the ledger.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis

from orchestrator.log import get_logger
from orchestrator.receiver.publish import ROTATE_TASK, task_message
from orchestrator.state import keys
from orchestrator.state.runs import RunRecord

if TYPE_CHECKING:
    from orchestrator.engine.core import Engine, RotateRequest

log = get_logger(__name__)

# KEYS: pending ZSET, message hash, publish-count hash, broker list, kombu's unacked hash.
# ARGV: event id, the score the sweep read, the fresh message, now in ms, 1 if it may publish.
# Returns 'gone' (settled meanwhile), 'raced' (another sweep took it), 'waiting' (the message
# is still queued or held by a worker: score bumped), 'lost' (lost, but out of publishes:
# nothing changed) or 'published'. LPOS searches from the tail, where old messages are (the
# queue is LPUSHed, consumed by BRPOP): ~60 us per entry behind a 10,000-message backlog.
REPUBLISH = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 'gone' end
if tonumber(score) ~= tonumber(ARGV[2]) then return 'raced' end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local tag = cjson.decode(old)['properties']['delivery_tag']
  if redis.call('LPOS', KEYS[4], old, 'RANK', -1) or redis.call('HEXISTS', KEYS[5], tag) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
    return 'waiting'
  end
end
if ARGV[5] ~= '1' then return 'lost' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[3])
return 'published'
"""


@dataclass(frozen=True)
class Pending:
    """One ledger entry: the event, its rotate arguments and how often the sweep re-published it."""

    event_id: str
    kwargs: dict[str, Any]
    publishes: int
    since_ms: int


@dataclass(frozen=True)
class Republished:
    """What one sweep of the ledger did: events published again, and those out of attempts."""

    published: list[str]
    exhausted: list[Pending]


def message_kwargs(message: bytes | str) -> dict[str, Any]:
    """The keyword arguments inside a Celery protocol-2 message built by ``task_message``."""
    envelope = json.loads(message)
    body = json.loads(base64.b64decode(envelope["body"]))
    kwargs: dict[str, Any] = body[1]
    return kwargs


class Ledger:
    """The pending ledger on one (synchronous) Redis client."""

    def __init__(self, client: redis.Redis, queue: str = keys.TASK_QUEUE) -> None:
        self.client = client
        self.queue = queue
        self._republish = client.register_script(REPUBLISH)

    def settle(self, event_id: str) -> None:
        """Remove ``event_id``: it has a run record or a recorded decision now."""
        pipe = self.client.pipeline(transaction=True)
        queue_settle(pipe, event_id)
        pipe.execute()

    def touch(self, event_id: str) -> None:
        """A task still works on ``event_id`` (it retries): the sweep waits another threshold."""
        self.client.zadd(keys.PENDING, {event_id: int(time.time() * 1000)}, xx=True)

    def entries(self, older_than: float = 0.0, limit: int = 200) -> list[Pending]:
        """Entries last published at least ``older_than`` seconds ago, oldest first."""
        cutoff = int((time.time() - older_than) * 1000)
        found = cast(
            "list[tuple[bytes, float]]",
            self.client.zrangebyscore(keys.PENDING, "-inf", cutoff, 0, limit, withscores=True),
        )
        if not found:
            return []
        ids = [_text(member) for member, _ in found]
        messages = self.client.hmget(keys.PENDING_MESSAGES, ids)
        counts = self.client.hmget(keys.PENDING_PUBLISHES, ids)
        entries = []
        scores = [score for _, score in found]
        for event_id, score, message, count in zip(ids, scores, messages, counts, strict=True):
            kwargs = message_kwargs(message) if message else {}
            entries.append(Pending(event_id, kwargs, int(count or 0), int(score)))
        return entries

    def republish(self, older_than: float, max_publishes: int, limit: int = 200) -> Republished:
        """Publish again the entries older than ``older_than`` seconds whose message was lost;
        lost entries re-published ``max_publishes`` times already are returned as exhausted."""
        published: list[str] = []
        exhausted: list[Pending] = []
        for entry in self.entries(older_than, limit):
            if not entry.kwargs:  # no message (cannot happen through the receiver's script)
                exhausted.append(entry)
                continue
            _, message = task_message(ROTATE_TASK, entry.kwargs, queue=self.queue)
            may_publish = 1 if entry.publishes < max_publishes else 0
            now = int(time.time() * 1000)
            outcome = _text(
                self._republish(
                    keys=[
                        keys.PENDING,
                        keys.PENDING_MESSAGES,
                        keys.PENDING_PUBLISHES,
                        self.queue,
                        keys.BROKER_UNACKED,
                    ],
                    args=[entry.event_id, entry.since_ms, message, now, may_publish],
                )
            )
            if outcome == "lost":
                exhausted.append(entry)
            if outcome == "published":
                published.append(entry.event_id)
                log.warning(
                    "event_republished",
                    event_id=entry.event_id,
                    path=entry.kwargs.get("path"),
                    attempt=entry.publishes + 1,
                )
        return Republished(published, exhausted)


def queue_settle(pipe: redis.client.Pipeline, event_id: str) -> None:
    """Queue :meth:`Ledger.settle`'s writes on ``pipe`` (the caller executes it). The pending
    entry goes first: should the rest be lost, the sweep never sees the event again."""
    pipe.zrem(keys.PENDING, event_id)
    pipe.hdel(keys.PENDING_MESSAGES, event_id)
    pipe.hdel(keys.PENDING_PUBLISHES, event_id)


def give_up(engine: Engine, request: RotateRequest, reason: str) -> RunRecord:
    """Record a rotate request that never got a run record as a ``failed`` run: one error log
    line, a metric, a history entry and an alert (the engine's failure path). An existing
    record with the same id is returned as it is (the request did get an outcome)."""
    from orchestrator.engine.core import manual_id, new_record

    rid = manual_id()
    if request.trigger == "schedule" and request.from_version is not None:
        rid = engine.scheduled_rid(request, request.from_version)  # the id the run would have
    rule = engine.routing.match(request.path)
    grace = request.grace_period or engine.settings.rotator_default_grace
    record = new_record(request, rid, rule, request.from_version, "failed", grace)
    return engine.refuse(record, reason)


def sweep_pending(engine: Engine, ledger: Ledger) -> Republished:
    """One sweep of the ledger: re-publish lost messages; give up on events out of attempts."""
    from orchestrator.engine.core import RotateRequest

    settings = engine.settings
    limit = settings.rotator_max_attempts
    swept = ledger.republish(settings.rotator_pending_republish_after, limit)
    for entry in swept.exhausted:
        kw = entry.kwargs
        if kw.get("path"):
            request = RotateRequest(
                path=str(kw["path"]),
                trigger=str(kw.get("trigger") or "schedule"),
                event_id=entry.event_id,
                from_version=_int_or_none(kw.get("from_version")),
                grace_period=kw.get("grace_period"),
                actor=kw.get("actor"),
                reason=kw.get("reason"),
            )
            reason = f"the event's task was lost {entry.publishes + 1} times; gave up"
            give_up(engine, request, reason)
        ledger.settle(entry.event_id)
    return swept


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
