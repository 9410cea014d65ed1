"""The receiver's account of the events it answers: Prometheus metrics and the accepted-events log.

Metrics live in a registry of the receiver's own (``GET /metrics``). With several uvicorn worker
processes they are kept in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
which ``serve --workers N`` sets up), so every scrape, whichever process answers it, reports the
sum over all processes. Accepted events are logged in batches, one line per event-loop iteration,
since logging dominates the hot path's CPU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

#: Series that alert rules watch, created at 0 when the process starts: a counter series that
#: appears only on its first increment has no earlier sample, so ``increase()`` misses it.
WATCHED_EVENTS = (
    ("rotation.due", "queued"),
    ("rotation.due", "duplicate"),
    ("rotation.due", "unavailable"),
    ("none", "unavailable"),
    ("none", "signature_missing"),
    ("none", "signature_malformed"),
    ("none", "signature_mismatch"),
)
PUBLISH_FAILURE_REASONS = ("unavailable", "timeout", "internal_error")


class Metrics:
    """The receiver's Prometheus metrics, in a registry of its own; ``multiprocess_dir`` is
    prometheus_client's ``PROMETHEUS_MULTIPROC_DIR`` when several processes serve."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.events = Counter(
            "scaivault_receiver_events",
            "Webhook requests by event type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scaivault_receiver_request_seconds",
            "Time to answer POST /scaivault/events.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.publish_failures = Counter(
            "scaivault_receiver_publish_failures",
            "Claim-and-publish attempts that failed (answered 503).",
            ["reason"],
            registry=self.registry,
        )
        self.secret_matches = Counter(
            "scaivault_receiver_signature_matches",
            "Verified requests by the position of the secret that matched (for rollover).",
            ["secret_position"],
            registry=self.registry,
        )
        self._events: dict[tuple[str, str], Any] = {}
        self._matches: dict[int, Any] = {}
        for event_type, outcome in WATCHED_EVENTS:
            self._child(event_type, outcome)
        for reason in PUBLISH_FAILURE_REASONS:
            self.publish_failures.labels(reason)

    def exposition(self) -> bytes:
        """Prometheus text of the metrics: of every receiver process in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def _child(self, event_type: str, outcome: str) -> Any:
        child = self._events.get((event_type, outcome))
        if child is None:
            child = self._events[event_type, outcome] = self.events.labels(event_type, outcome)
        return child

    def event(self, event_type: str, outcome: str) -> None:
        """Count one request (label children cached: ``labels()`` is costly on the hot path)."""
        self._child(event_type, outcome).inc()

    def secret_match(self, position: int) -> None:
        """Count one verified request by the position of the secret that matched."""
        child = self._matches.get(position)
        if child is None:
            child = self._matches[position] = self.secret_matches.labels(str(position))
        child.inc()


class AcceptedLog:
    """Writes accepted events as ``events_accepted`` lines, one per event-loop iteration.

    A log line costs about as much CPU as verifying, parsing and publishing an event, so under
    load the events finished in the same loop iteration (typically one publish batch) share a
    line: ``count`` plus ``events``, each with ``event_id``, ``path``, ``type``, ``outcome``,
    ``status``, ``secret_position`` (which configured secret matched) and ``task_id``. When
    events arrive one at a time, every line carries one event. Rejections and failures are
    always logged one line per request.
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.entries: list[dict[str, Any]] = []

    def add(self, **entry: Any) -> None:
        """Queue one event's fields; the line is written once the current iteration ends."""
        if not self.entries:
            asyncio.get_running_loop().call_soon(self.flush)
        self.entries.append(entry)

    def flush(self) -> None:
        entries, self.entries = self.entries, []
        if entries:
            self.logger.info("events_accepted", count=len(entries), events=entries)
