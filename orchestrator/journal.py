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
        fields.setdefault("rotation_id", record.rotation_id)
        fields.setdefault("rotator", record.rotator)
        fields.setdefault("trigger", record.trigger)
        fields.setdefault("actor", record.actor)
        fields.setdefault("event_id", record.event_id)
        try:
            history.append(self.client, record.path, event, **fields)
        except redis.RedisError as exc:
            self.log.warning("history_write_failed", path=record.path, reason=reason_of(exc))

    @contextmanager
    def timed(self, record: RunRecord, step: str) -> Iterator[None]:
        """Time a step that succeeds: a metric, a ``step_done`` log line and history entry."""
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        metrics.observe_step(self.client, record.rotator or "none", step, seconds)
        self.log.info(
            "step_done",
            rotation_id=record.rotation_id,
            path=record.path,
            rotator=record.rotator,
            step=step,
            duration_ms=round(seconds * 1000),
        )
        self.history(record, "step_done", step=step, duration_ms=round(seconds * 1000))

    def outcome(self, rotator: str | None, state: str) -> None:
        """Count a run's outcome (``stored``, ``done``, ``failed`` ...) per rotator."""
        metrics.record_outcome(self.client, rotator or "none", state)
