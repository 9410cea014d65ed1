"""Writes that ride along with the next round trip to Redis: history entries and metrics.

A rotation records what happened (each step's timing, history entries, its outcome) several
times. Sent one by one, those writes were half of a rotation's Redis round trips. Queued here,
they go out in the same pipeline as the run store's next script, ahead of it, so a reader never
sees a state newer than the history behind it; or at the end of the task (:meth:`Outbox.flush`).

Queues are per thread (a lease heartbeat thread never sends another thread's writes). Only
bookkeeping is queued: a state change, a lease or the due-queue is never deferred. A write
that fails is logged, never raised: the audit trail must not break a rotation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from orchestrator.errors import reason_of


@dataclass(frozen=True)
class _Write:
    """One queued write: what queues its commands on a pipeline, and how to log a failure."""

    queue: Callable[[redis.client.Pipeline], None]
    failed: str  # the log event when it fails, e.g. ``history_write_failed``
    fields: dict[str, Any]


class Outbox:
    """Bookkeeping writes waiting for the next round trip (one queue per thread)."""

    def __init__(self, client: redis.Redis, log: structlog.stdlib.BoundLogger) -> None:
        self.client = client
        self.log = log
        self._local = threading.local()

    def queue(
        self, write: Callable[[redis.client.Pipeline], None], failed: str, **fields: Any
    ) -> None:
        """Queue ``write`` (it queues commands on a pipeline); ``failed`` is logged if it fails."""
        self._pending().append(_Write(write, failed, fields))

    def call(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` with this thread's queued writes ahead of it, in one round trip.

        Returns the script's reply and raises its error, as calling ``script`` would.
        """
        writes = self._take()
        if not writes:
            return script(keys=keys, args=args)
        pipe = self.client.pipeline(transaction=False)
        spans = self._queue_all(pipe, writes)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # the script's caller sees this; the writes may be lost
            self._report(writes, exc)
            raise
        self._check(writes, spans, replies)
        reply = replies[-1]
        if isinstance(reply, NoScriptError):  # Redis restarted and lost its script cache
            return script(keys=keys, args=args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def flush(self) -> None:
        """Send this thread's queued writes now (the end of a task)."""
        writes = self._take()
        if not writes:
            return
        pipe = self.client.pipeline(transaction=False)
        spans = self._queue_all(pipe, writes)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            self._report(writes, exc)
            return
        self._check(writes, spans, replies)

    def _pending(self) -> list[_Write]:
        pending: list[_Write] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = []
        return pending

    def _take(self) -> list[_Write]:
        writes = self._pending()
        self._local.pending = []
        return writes

    def _queue_all(self, pipe: redis.client.Pipeline, writes: list[_Write]) -> list[range]:
        spans = []
        for write in writes:
            start = len(pipe)
            try:
                write.queue(pipe)
            except Exception as exc:  # a bookkeeping bug must not cost the state change
                self.log.warning(write.failed, reason=reason_of(exc), **write.fields)
            spans.append(range(start, len(pipe)))
        return spans

    def _check(self, writes: list[_Write], spans: list[range], replies: list[Any]) -> None:
        for write, span in zip(writes, spans, strict=True):
            error = next(
                (r for r in replies[span.start : span.stop] if isinstance(r, Exception)), None
            )
            if error is not None:
                self.log.warning(write.failed, reason=reason_of(error), **write.fields)

    def _report(self, writes: list[_Write], exc: Exception) -> None:
        for write in writes:
            self.log.warning(write.failed, reason=reason_of(exc), **write.fields)
