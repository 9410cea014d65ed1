"""A rotation's audit trail: history entries and step timings (metric, log line, history).

Every part of the engine records what happened through one :class:`Journal`, so a history
entry always names the run's id, rotator, trigger, actor and event, and a lost history write
(Redis trouble) is logged instead of breaking the rotation. The writes wait in an
:class:`~orchestrator.state.outbox.Outbox` for the run store's next round trip, or for
:meth:`Journal.flush` at the end of a task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import structlog

from orchestrator.state import history, metrics
from orchestrator.state.outbox import Outbox
from orchestrator.state.runs import RunRecord


class Journal:
    """Queues a run's history entries, step timings and outcomes for Redis."""

    def __init__(self, outbox: Outbox, log: structlog.stdlib.BoundLogger, name: str) -> None:
        self.outbox = outbox
        self.log = log
        # The stdlib logger behind ``log`` (``name`` must be the name ``log`` was made with):
        # asked before each step's DEBUG line, which otherwise costs a structlog bind and a
        # processor run even when dropped.
        self._stdlib = logging.getLogger(name)
        self._local = threading.local()  # the step that raised, per thread (failed_step)

    def history(self, record: RunRecord, event: str, **fields: Any) -> None:
        """Append ``event`` to the path's history; the run's ids fill the fields not given."""
        built = history.entry(event, **_run_fields(record, fields))  # stamped now, sent later

        def write(pipe: redis.client.Pipeline) -> None:
            history.queue_entry(pipe, record.path, built)

        self.outbox.queue(write, "history_write_failed", path=record.path)

    @contextmanager
    def timed(self, record: RunRecord, step: str) -> Iterator[None]:
        """Time a step that succeeds: a metric, a ``step_done`` log line and history entry.
        A step that raises is remembered for :meth:`failed_step` instead."""
        self._local.failed = None
        started = time.monotonic()
        try:
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

        self.outbox.queue(write, "metrics_write_failed", rotator=record.rotator, step=step)
        self.history(record, "step_done", step=step, duration_ms=round(seconds * 1000))

    def outcome(self, rotator: str | None, state: str) -> None:
        """Count a run's outcome (``stored``, ``done``, ``failed`` ...) per rotator."""

        def write(pipe: redis.client.Pipeline) -> None:
            metrics.queue_outcome(pipe, rotator or "none", state)

        self.outbox.queue(write, "metrics_write_failed", rotator=rotator, outcome=state)

    def flush(self) -> None:
        """Send what is queued now (every engine entry point ends with this)."""
        self.outbox.flush()


def _run_fields(record: RunRecord, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the run's ids filled in where not given."""
    fields.setdefault("rotation_id", record.rotation_id)
    fields.setdefault("rotator", record.rotator)
    fields.setdefault("trigger", record.trigger)
    fields.setdefault("actor", record.actor)
    fields.setdefault("event_id", record.event_id)
    return fields
