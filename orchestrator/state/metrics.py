"""Worker metrics for Prometheus, kept in Redis so prefork children and restarts all count.

Writers (the engine, in any worker process) add to Redis hashes; a custom collector reads them
at scrape time together with the due-queue, so every worker's endpoint shows the same,
fleet-wide numbers. Exposed (all prefixed ``scaivault_rotator_``):

- ``rotations_total{rotator, outcome}`` — finished rotations by outcome (``done``, ``failed``...)
- ``step_duration_seconds{rotator, step}`` — histogram of step durations
- ``pending_finalizations`` — entries in the due-queue
- ``oldest_overdue_finalization_seconds`` — how long the most overdue finalization is late (0 if
  none is)
- ``finalize_waiting`` — rotations whose finalize waits for the old credential to be unused
- ``finalize_waiting_longest_seconds`` — how long the longest of them has waited (0 if none)
- ``pending_events`` — accepted ``rotation.due`` events without a run record yet (the pending
  events the sweep re-publishes)
- ``oldest_pending_event_seconds`` — how long the oldest of them has waited (0 if none)
- ``workers{role}`` — live worker and beat processes: a heartbeat within the registry's TTL
  (:mod:`orchestrator.state.workers`)
- ``heartbeat_age_seconds{role}`` — seconds since the newest heartbeat of the role (absent
  until one beat)
- ``sweep_age_seconds`` — seconds since a ``sweep`` last finished (absent until one did)
- ``queue_length`` — task messages waiting on the broker queue
- ``unacked_messages`` — task messages workers took and have not acknowledged yet
- ``credentials_left_valid`` — credentials left valid at a target until on-call acknowledges
  them (:mod:`orchestrator.state.strays`; 0 when there are none)
- ``metrics_redis_up`` — 0 when Redis could not be read for this scrape

Labels hold rotator names, outcomes and step names only, never a secret value. Recording never
raises: a metric write that fails is logged, and the rotation goes on.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestrator.errors import ConfigError
from orchestrator.log import get_logger
from orchestrator.state import keys
from orchestrator.state.workers import ROLES

if TYPE_CHECKING:
    from orchestrator.settings import Settings

PREFIX = "scaivault_rotator_"

#: Outcomes a run is counted under (``rotations_total{outcome}``); each routed rotator's series
#: exist at 0 from the first scrape, so ``increase()`` sees a rotator's first failure.
OUTCOMES = ("stored", "done", "failed", "needs_attention", "skipped", "cancelled", "rolled_back")

#: The rotator label of runs that never reached a rotator (unrouted, refused before routing).
NO_ROTATOR = "none"

#: Upper bounds (seconds) of the step-duration histogram buckets.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)

log = get_logger(__name__)


def record_outcome(client: redis.Redis, rotator: str, outcome: str) -> None:
    """Count one finished rotation of ``rotator`` with ``outcome`` (a run state)."""
    try:
        client.hincrby(keys.METRIC_OUTCOMES, json.dumps([rotator, outcome]), 1)
    except redis.RedisError as exc:
        log.warning("metrics_write_failed", rotator=rotator, reason=type(exc).__name__)


def queue_outcome(pipe: redis.client.Pipeline, rotator: str, outcome: str) -> None:
    """Queue :func:`record_outcome`'s write on ``pipe`` (the caller executes it)."""
    pipe.hincrby(*outcome_counter(rotator, outcome), 1)


def outcome_counter(rotator: str, outcome: str) -> tuple[str, str]:
    """(hash, field) of ``rotator``'s ``outcome`` counter, for a script that counts it."""
    return keys.METRIC_OUTCOMES, json.dumps([rotator, outcome])


def observe_step(client: redis.Redis, rotator: str, step: str, seconds: float) -> None:
    """Add one duration of ``step`` to ``rotator``'s histogram."""
    try:
        pipe = client.pipeline(transaction=False)
        queue_step(pipe, rotator, step, seconds)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics_write_failed", rotator=rotator, step=step, reason=type(exc).__name__)


def queue_step(pipe: redis.client.Pipeline, rotator: str, step: str, seconds: float) -> None:
    """Queue :func:`observe_step`'s writes on ``pipe`` (the caller executes it)."""
    bound = next(b for b in BUCKETS if seconds <= b)
    pipe.hincrby(keys.METRIC_STEPS, _field(rotator, step, "le", bound), 1)
    pipe.hincrbyfloat(keys.METRIC_STEPS, _field(rotator, step, "sum"), max(seconds, 0.0))


def _field(rotator: str, step: str, kind: str, bound: float | None = None) -> str:
    parts: list[Any] = [rotator, step, kind]
    if bound is not None:
        parts.append(_bound_text(bound))
    return json.dumps(parts)


def _bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: The routed rotators' names, or a function returning them as they are at each scrape (a
#: worker's routing table, which a reload may give new rotators).
Rotators = Iterable[str] | Callable[[], Iterable[str]]


class WorkerCollector(Collector):
    """Reads the Redis-kept counters and the due-queue at scrape time; ``rotators`` (the routed
    ones) get every outcome series, at 0 until counted."""

    def __init__(
        self, client: redis.Redis, rotators: Rotators = (), process_ttl: float = 60.0
    ) -> None:
        self.client = client
        self._rotators = rotators if callable(rotators) else tuple(rotators)
        self.process_ttl_ms = process_ttl * 1000

    @property
    def rotators(self) -> list[str]:
        """The rotators whose outcome series this scrape shows, at 0 until counted."""
        names = self._rotators() if callable(self._rotators) else self._rotators
        return sorted({*names, NO_ROTATOR})

    def collect(self) -> Iterator[Metric]:
        """Yield every worker metric; only ``metrics_redis_up`` 0 when Redis is unreachable."""
        up = GaugeMetricFamily(PREFIX + "metrics_redis_up", "1 if Redis was read for this scrape")
        try:
            scrape = self._read()
        except redis.RedisError as exc:
            log.warning("metrics_read_failed", reason=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _outcomes(scrape.outcomes, self.rotators)
        yield _histogram(scrape.steps)
        yield from _due(scrape)
        yield from _waiting(scrape)
        yield from _pending(scrape)
        yield from _processes(scrape, self.process_ttl_ms)
        yield from _queue_and_sweep(scrape)

    def _read(self) -> _Scrape:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.METRIC_OUTCOMES)
        pipe.hgetall(keys.METRIC_STEPS)
        pipe.zcard(keys.DUE)
        pipe.zrange(keys.DUE, 0, 0, withscores=True)
        pipe.zcard(keys.WAITING)
        pipe.zrange(keys.WAITING, 0, 0, withscores=True)
        pipe.zcard(keys.PENDING)
        pipe.zrange(keys.PENDING, 0, 0, withscores=True)
        pipe.zrange(keys.PROCESSES, 0, -1, withscores=True)
        pipe.get(keys.SWEEP_DONE)
        pipe.llen(keys.TASK_QUEUE)
        pipe.hlen(keys.BROKER_UNACKED)
        pipe.hlen(keys.STRAYS)
        pipe.time()
        outcomes, steps, due, oldest_due, waiting, first_waiting, *rest = pipe.execute()
        pending, oldest_pending, processes, sweep_done, queued, unacked, *rest = rest
        left_valid, (secs, micros) = rest
        return _Scrape(
            outcomes=outcomes,
            steps=steps,
            due=int(due),
            oldest_due_ms=float(oldest_due[0][1]) if oldest_due else None,
            waiting=int(waiting),
            first_waiting_ms=float(first_waiting[0][1]) if first_waiting else None,
            pending=int(pending),
            oldest_pending_ms=float(oldest_pending[0][1]) if oldest_pending else None,
            processes=[(_text(member), float(score)) for member, score in processes],
            sweep_done_ms=float(sweep_done) if sweep_done is not None else None,
            queued=int(queued),
            unacked=int(unacked),
            left_valid=int(left_valid),
            now_ms=secs * 1000 + micros / 1000,
        )


@dataclass(frozen=True)
class _Scrape:
    """What one scrape read from Redis (times in ms on Redis's clock)."""

    outcomes: dict[Any, Any]
    steps: dict[Any, Any]
    due: int
    oldest_due_ms: float | None
    waiting: int
    first_waiting_ms: float | None
    pending: int
    oldest_pending_ms: float | None
    processes: list[tuple[str, float]]
    sweep_done_ms: float | None
    queued: int
    unacked: int
    left_valid: int
    now_ms: float

    def seconds_since(self, ms: float | None) -> float:
        """Seconds from ``ms`` to the scrape (0 for None or a time ahead)."""
        return 0.0 if ms is None else max(0.0, (self.now_ms - ms) / 1000)


def _outcomes(raw: dict[Any, Any], rotators: Iterable[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        PREFIX + "rotations",
        "Finished rotations by rotator and outcome",
        labels=["rotator", "outcome"],
    )
    counts = {(rotator, outcome): 0 for rotator in rotators for outcome in OUTCOMES}
    for key, value in raw.items():
        rotator, outcome = json.loads(_text(key))
        counts[rotator, outcome] = int(value)
    for (rotator, outcome), value in sorted(counts.items()):
        family.add_metric([rotator, outcome], value)
    return family


def _histogram(raw: dict[Any, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        PREFIX + "step_duration_seconds", "Duration of rotation steps", labels=["rotator", "step"]
    )
    counts: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    sums: dict[tuple[str, str], float] = {}
    for key, value in raw.items():
        parts = json.loads(_text(key))
        series = (parts[0], parts[1])
        if parts[2] == "le":
            counts[series][parts[3]] = float(value)
        elif parts[2] == "sum":
            sums[series] = float(value)
    for series in sorted(set(counts) | set(sums)):
        cumulative, buckets = 0.0, []
        for bound in BUCKETS:
            cumulative += counts[series].get(_bound_text(bound), 0.0)
            buckets.append((_bound_text(bound), cumulative))
        family.add_metric(list(series), buckets, sums.get(series, 0.0))
    return family


def _due(scrape: _Scrape) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        PREFIX + "pending_finalizations", "Rotations waiting in the due-queue", value=scrape.due
    )
    yield GaugeMetricFamily(
        PREFIX + "oldest_overdue_finalization_seconds",
        "Seconds the most overdue finalization is past its due time (0 if none)",
        value=scrape.seconds_since(scrape.oldest_due_ms),
    )


def _waiting(scrape: _Scrape) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        PREFIX + "finalize_waiting",
        "Rotations whose finalize waits for the old credential to be unused",
        value=scrape.waiting,
    )
    yield GaugeMetricFamily(
        PREFIX + "finalize_waiting_longest_seconds",
        "Seconds the longest-waiting finalize has waited for the old credential (0 if none)",
        value=scrape.seconds_since(scrape.first_waiting_ms),
    )


def _pending(scrape: _Scrape) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        PREFIX + "pending_events",
        "Accepted rotation.due events without a run record yet",
        value=scrape.pending,
    )
    yield GaugeMetricFamily(
        PREFIX + "oldest_pending_event_seconds",
        "Seconds the oldest pending event has waited since its last publish (0 if none)",
        value=scrape.seconds_since(scrape.oldest_pending_ms),
    )


def _processes(scrape: _Scrape, ttl_ms: float) -> Iterator[Metric]:
    live = GaugeMetricFamily(
        PREFIX + "workers", "Live processes (a heartbeat within the TTL) by role", labels=["role"]
    )
    age = GaugeMetricFamily(
        PREFIX + "heartbeat_age_seconds",
        "Seconds since the newest heartbeat of a role's processes",
        labels=["role"],
    )
    for role in ROLES:
        beats = [ms for member, ms in scrape.processes if member.startswith(f"{role}:")]
        live.add_metric([role], sum(1 for ms in beats if scrape.now_ms - ms <= ttl_ms))
        if beats:
            age.add_metric([role], scrape.seconds_since(max(beats)))
    yield live
    yield age


def _queue_and_sweep(scrape: _Scrape) -> Iterator[Metric]:
    """The broker queue, the credentials left valid and the sweep's age."""
    yield GaugeMetricFamily(
        PREFIX + "queue_length", "Task messages waiting on the broker queue", value=scrape.queued
    )
    yield GaugeMetricFamily(
        PREFIX + "unacked_messages",
        "Task messages workers took and have not acknowledged yet",
        value=scrape.unacked,
    )
    yield GaugeMetricFamily(
        PREFIX + "credentials_left_valid",
        "Credentials left valid at a target, until on-call revokes and acknowledges them",
        value=scrape.left_valid,
    )
    if scrape.sweep_done_ms is not None:
        yield GaugeMetricFamily(
            PREFIX + "sweep_age_seconds",
            "Seconds since a sweep last finished",
            value=scrape.seconds_since(scrape.sweep_done_ms),
        )


def record_sweep(client: redis.Redis) -> None:
    """Note that a sweep finished now (Redis's clock), for ``sweep_age_seconds``."""
    try:
        secs, micros = client.time()
        client.set(keys.SWEEP_DONE, int(secs) * 1000 + int(micros) // 1000)
    except redis.RedisError as exc:
        log.warning("metrics_write_failed", metric="sweep_age_seconds", reason=type(exc).__name__)


def registry(
    client: redis.Redis, rotators: Rotators = (), process_ttl: float = 60.0
) -> CollectorRegistry:
    """A registry with the worker collector (use it for the HTTP endpoint or tests)."""
    reg = CollectorRegistry()
    reg.register(WorkerCollector(client, rotators, process_ttl))
    return reg


def start_metrics_server(
    settings: Settings,
    client: redis.Redis,
    *,
    rotators: Rotators = (),
    process_ttl: float = 60.0,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped remotely
) -> tuple[Any, Any] | None:
    """Serve ``/metrics`` on ``ROTATOR_METRICS_PORT`` (0 = off); return (server, thread).

    Raises :class:`ConfigError` when the port cannot be bound (another worker on this host
    holds it), so the worker stops instead of running without its endpoint.
    """
    port = settings.rotator_metrics_port
    if port == 0:
        return None
    try:
        server, thread = start_http_server(
            port, addr=addr, registry=registry(client, rotators, process_ttl)
        )
    except OSError as exc:
        raise ConfigError(
            f"ROTATOR_METRICS_PORT: cannot listen on port {port} ({exc.strerror}); another "
            "worker on this host may hold it: give each worker its own port, or 0 for none"
        ) from None
    log.info("metrics_server_started", port=port)
    return server, thread
