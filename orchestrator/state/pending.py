"""The pending events: accepted webhook events and manual rotations that have no durable outcome
yet.

The receiver's claim script (``lua/event_publish.lua``) adds every accepted ``rotation.due``
here (event id -> its task message, which holds ids and paths only, plus a sorted set scored by
the time of its last publish) atomically with the dedupe claim and the push. The engine settles
the entry once the event has a run record or a recorded decision (skipped, merged, duplicate).
Until then the message can be lost without a trace: a worker SIGKILLed between kombu's
``BRPOP`` and its unacked bookkeeping, or a task that raised before the run record existed. A
task that retries (:meth:`PendingEvents.touch`) says so itself.

The sweep looks at entries older than ``ROTATOR_PENDING_REPUBLISH_AFTER``
(:meth:`PendingEvents.republish`): a message still on the queue or held by a worker (kombu's
``unacked`` hash) is only waiting, so its score is bumped; a message that is in neither place
was lost and is published again (a fresh task id and delivery tag, same arguments). A message
kombu restored from ``unacked`` is serialised anew, so while it waits on the queue it can look
lost and be published once more. Publishing twice is safe: a scheduled rotation's id derives
from (path, version) and the engine merges duplicates. An event lost more often than that is
handed back to the engine as exhausted (it records a ``failed`` run, loudly).

Manual rotations (the CLI's ``rotate``) take the same path: :func:`queue_publish` writes the
entry and pushes the message in the caller's transaction, under a manual event id
(:func:`manual_event_id`). Its ``/`` is outside the alphabet the receiver accepts for a webhook's
event id, so no webhook can pass for a manual rotation (the engine does not raise an on-call's
``--grace`` to ``ROTATOR_MIN_GRACE``, and names the run after the event id).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis

from orchestrator.log import get_logger
from orchestrator.state import keys, scripts
from orchestrator.state.messages import RotateRequest, Task, message_kwargs, task_message

log = get_logger(__name__)

#: The start of a manual rotation's event id; ``/`` never occurs in a webhook's.
MANUAL_EVENT_PREFIX = "manual/"


def manual_event_id() -> str:
    """A fresh event id for a rotation on-call asked for (``manual/<uuid4>``)."""
    return f"{MANUAL_EVENT_PREFIX}{uuid.uuid4()}"


def is_manual_event(event_id: str | None) -> bool:
    """Whether ``event_id`` names a manual rotation's ledger entry (not a webhook's event)."""
    return event_id is not None and event_id.startswith(MANUAL_EVENT_PREFIX)


@dataclass(frozen=True)
class PendingEvent:
    """One pending event: its rotate arguments and how often the sweep published it again."""

    event_id: str
    kwargs: dict[str, Any]
    publishes: int
    since_ms: int


@dataclass(frozen=True)
class Republished:
    """What one sweep of the pending events did: published again, or out of attempts."""

    published: list[str]
    exhausted: list[PendingEvent]


class PendingEvents:
    """The pending events on one (synchronous) Redis client."""

    def __init__(self, client: redis.Redis, queue: str = keys.TASK_QUEUE) -> None:
        self.client = client
        self.queue = queue
        self._republish = scripts.register(client, "pending_republish")

    def settle(self, event_id: str) -> None:
        """Remove ``event_id``: it has a run record or a recorded decision now."""
        pipe = self.client.pipeline(transaction=True)
        queue_settle(pipe, event_id)
        pipe.execute()

    def touch(self, event_id: str) -> None:
        """A task still works on ``event_id`` (it retries): the sweep waits another threshold."""
        self.client.zadd(keys.PENDING, {event_id: int(time.time() * 1000)}, xx=True)

    def entries(self, older_than: float = 0.0, limit: int = 200) -> list[PendingEvent]:
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
            entries.append(PendingEvent(event_id, kwargs, int(count or 0), int(score)))
        return entries

    def republish(self, older_than: float, max_publishes: int, limit: int = 200) -> Republished:
        """Publish again the entries older than ``older_than`` seconds whose message was lost;
        lost entries re-published ``max_publishes`` times already are returned as exhausted."""
        published: list[str] = []
        exhausted: list[PendingEvent] = []
        for entry in self.entries(older_than, limit):
            if not entry.kwargs:  # no message (cannot happen through the receiver's script)
                exhausted.append(entry)
                continue
            _, message = task_message(Task.ROTATE, entry.kwargs, queue=self.queue)
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


def queue_publish(
    pipe: redis.client.Pipeline, request: RotateRequest, queue: str = keys.TASK_QUEUE
) -> str:
    """Queue on ``pipe`` (a transaction the caller executes) what the receiver's claim script
    does for an event: the pending entry of ``request.event_id`` with its message, then the
    push. Returns the task id. The sweep publishes the message again if it is lost."""
    if request.event_id is None:
        raise ValueError("a pending entry needs the request's event id")
    task_id, message = task_message(Task.ROTATE, request.to_kwargs(), queue=queue)
    pipe.hset(keys.PENDING_MESSAGES, request.event_id, message)
    pipe.zadd(keys.PENDING, {request.event_id: int(time.time() * 1000)})
    pipe.lpush(queue, message)
    return task_id


def queue_settle(pipe: redis.client.Pipeline, event_id: str) -> None:
    """Queue :meth:`PendingEvents.settle`'s writes on ``pipe`` (the caller executes it). The pending
    entry goes first: should the rest be lost, the sweep never sees the event again."""
    pipe.zrem(keys.PENDING, event_id)
    pipe.hdel(keys.PENDING_MESSAGES, event_id)
    pipe.hdel(keys.PENDING_PUBLISHES, event_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
