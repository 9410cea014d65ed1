"""The recorder: the run store that also records each run's history, step metrics and outcomes.

A rotation records what happened several times (each step's timing, history entries, its
outcome, the settlement of its pending event). Sent one by one, those writes would be half of a
rotation's Redis round trips. The recorder queues them and sends them in the same pipeline as
the run's next state change, ahead of it, so a reader never sees a state newer than the history
behind it; or at the end of the task (:meth:`Recorder.flush`). So a rotation costs one round
trip per state change, and every round trip of a run goes through this one object.

Queues are per thread (the lease keeper's thread never sends another thread's writes). Only
bookkeeping is queued: a state change, a lease or the due-queue is never deferred. A write that
fails is logged, never raised: the audit trail must not break a rotation. Every history entry
names the run's id, rotator, trigger, actor and event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from orchestrator import tracing
from orchestrator.errors import reason_of
from orchestrator.state import history, metrics, pending
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore


class Recorder(RunStore):
    """A worker's run store: state changes, with their history and metrics riding along."""

    def __init__(
        self, client: redis.Redis, log: structlog.stdlib.BoundLogger, name: str, worker: str = ""
    ) -> None:
        self._writes = WriteQueue(client, log)
        super().__init__(client, worker)
        self.log = log
        # The stdlib logger behind ``log`` (``name`` must be the name ``log`` was made with):
        # asked before each step's DEBUG line, which otherwise costs a structlog bind and a
        # processor run even when dropped.
        self._stdlib = logging.getLogger(name)
        self._local = threading.local()  # the step that raised, per thread (failed_step)

    def _call(self, script: Any, key_list: list[str], argv: list[Any]) -> Any:
        return self._writes.call(script, key_list, argv)

    def history(self, record: RunRecord, event: str, **fields: Any) -> None:
        """Append ``event`` to the path's history; the run's ids fill the fields not given."""
        built = history.entry(event, **_run_fields(record, fields))  # stamped now, sent later

        def write(pipe: redis.client.Pipeline) -> None:
            history.queue_entry(pipe, record.path, built)

        self._writes.queue(write, "history_write_failed", path=record.path)

    @contextmanager
    def timed(self, record: RunRecord, step: str) -> Iterator[None]:
        """Time a step that succeeds: a metric, a ``step_done`` log line and history entry, and
        a trace span (when tracing is on). A step that raises is remembered for
        :meth:`failed_step` instead."""
        self._local.failed = None
        started = time.monotonic()
        try:
            with tracing.span(
                f"rotation.{step}",
                **{
                    "rotation.id": record.rotation_id,
                    "rotation.path": record.path,
                    "rotation.step": step,
                    "rotator": record.rotator,
                },
            ):
                yield
        except BaseException:
            self._local.failed = (record.rotation_id, step)
            raise
        self.step_done(record, step, time.monotonic() - started)

    def failed_step(self, rotation_id: str) -> str | None:
        """The step of ``rotation_id`` that last raised in this thread (and forget it), or
        None. A run's record names its step only where the step changed its state; a
        vault-only rotator's mint and verify do not (see :mod:`orchestrator.engine.credential`)."""
        failed: tuple[str, str] | None = getattr(self._local, "failed", None)
        self._local.failed = None
        return failed[1] if failed is not None and failed[0] == rotation_id else None

    def step_done(self, record: RunRecord, step: str, seconds: float) -> None:
        """Record a step that took ``seconds``: its metric and history entry, and a DEBUG log
        line (at INFO a rotation logs one line per outcome, not one per step)."""
        if self._stdlib.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "step_done",
                rotation_id=record.rotation_id,
                path=record.path,
                rotator=record.rotator,
                step=step,
                duration_ms=round(seconds * 1000),
            )
        rotator = record.rotator or "none"

        def write(pipe: redis.client.Pipeline) -> None:
            metrics.queue_step(pipe, rotator, step, seconds)

        self._writes.queue(write, "metrics_write_failed", rotator=record.rotator, step=step)
        self.history(record, "step_done", step=step, duration_ms=round(seconds * 1000))

    def outcome(self, rotator: str | None, state: str) -> None:
        """Count a run's outcome (``stored``, ``done``, ``failed`` ...) per rotator."""

        def write(pipe: redis.client.Pipeline) -> None:
            metrics.queue_outcome(pipe, rotator or "none", state)

        self._writes.queue(write, "metrics_write_failed", rotator=rotator, outcome=state)

    def settle(self, event_id: str) -> None:
        """Take ``event_id`` out of the pending events: its request has a run record or a
        recorded decision now."""

        def write(pipe: redis.client.Pipeline) -> None:
            pending.queue_settle(pipe, event_id)

        self._writes.queue(write, "pending_settle_failed", event_id=event_id)

    def flush(self) -> None:
        """Send what is queued now (every engine entry point ends with this)."""
        self._writes.flush()


def _run_fields(record: RunRecord, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the run's ids filled in where not given."""
    fields.setdefault("rotation_id", record.rotation_id)
    fields.setdefault("rotator", record.rotator)
    fields.setdefault("trigger", record.trigger)
    fields.setdefault("actor", record.actor)
    fields.setdefault("event_id", record.event_id)
    return fields


@dataclass(frozen=True)
class _Write:
    """One queued write: what queues its commands on a pipeline, and how to log a failure."""

    queue: Callable[[redis.client.Pipeline], None]
    failed: str  # the log event when it fails, e.g. ``history_write_failed``
    fields: dict[str, Any]


class WriteQueue:
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
