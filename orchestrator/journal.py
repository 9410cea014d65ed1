"""A rotation's audit trail: history entries and step timings (metric, log line, history).

Every part of the engine records what happened through one :class:`Journal`, so a history
entry always names the run's id, rotator, trigger, actor and event, and a lost history write
(Redis trouble) is logged instead of breaking the rotation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import structlog

from orchestrator import history, metrics
from orchestrator.failure import reason_of
from orchestrator.store import RunRecord


class Journal:
    """Writes a run's history entries and step timings to Redis."""

    def __init__(self, client: redis.Redis, log: structlog.stdlib.BoundLogger) -> None:
        self.client = client
        self.log = log

    def history(self, record: RunRecord, event: str, **fields: Any) -> None:
        """Append ``event`` to the path's history; the run's ids fill the fields not given."""
        try:
            history.append(self.client, record.path, event, **_run_fields(record, fields))
        except redis.RedisError as exc:
            self.log.warning("history_write_failed", path=record.path, reason=reason_of(exc))

    @contextmanager
    def timed(self, record: RunRecord, step: str) -> Iterator[None]:
        """Time a step that succeeds: a metric, a ``step_done`` log line and history entry."""
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.log.info(
            "step_done",
            rotation_id=record.rotation_id,
            path=record.path,
            rotator=record.rotator,
            step=step,
            duration_ms=round(seconds * 1000),
        )
        self._step_done(record, step, seconds)

    def _step_done(self, record: RunRecord, step: str, seconds: float) -> None:
        """The step's metric and ``step_done`` history entry in one round trip."""
        fields = _run_fields(record, {"step": step, "duration_ms": round(seconds * 1000)})
        pipe = self.client.pipeline(transaction=False)
        metrics.queue_step(pipe, record.rotator or "none", step, seconds)
        history.queue_append(pipe, record.path, "step_done", **fields)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            reason = reason_of(exc)
            self.log.warning(
                "metrics_write_failed", rotator=record.rotator, step=step, reason=reason
            )
            self.log.warning("history_write_failed", path=record.path, reason=reason)

    def outcome(self, rotator: str | None, state: str) -> None:
        """Count a run's outcome (``stored``, ``done``, ``failed`` ...) per rotator."""
        metrics.record_outcome(self.client, rotator or "none", state)


def _run_fields(record: RunRecord, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the run's ids filled in where not given."""
    fields.setdefault("rotation_id", record.rotation_id)
    fields.setdefault("rotator", record.rotator)
    fields.setdefault("trigger", record.trigger)
    fields.setdefault("actor", record.actor)
    fields.setdefault("event_id", record.event_id)
    return fields
