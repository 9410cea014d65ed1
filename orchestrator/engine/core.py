"""The rotation engine: the facade the Celery tasks use, and how a rotation starts (DESIGN §6).

Celery-free on purpose: :mod:`orchestrator.worker.tasks` calls it. One worker drives a rotation at a
time: it holds the run's lease (renewed by a heartbeat thread while it works) and every state
change is checked against that lease in Redis, so a worker that lost its lease stops at its
next step. A worker that dies leaves an expiring lease that the sweeper re-drives.

The parts: :mod:`~orchestrator.engine.driver` (read N -> mint -> verify -> store N+1 -> grace, with
:mod:`~orchestrator.engine.credential` for the new value), :mod:`~orchestrator.engine.finalize`
(finalize and the sweep), :mod:`~orchestrator.engine.reconcile` (due entries rebuilt from ScaiVault
metadata), :mod:`~orchestrator.engine.failures` (retry, failed or needs_attention, always loud) and
:mod:`~orchestrator.engine.journal` (history entries and step timings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator import connection
from orchestrator.duration import format_duration, parse_duration
from orchestrator.engine.alerts import Alerter
from orchestrator.engine.credential import Minter
from orchestrator.engine.driver import ROTATED_BY, Driver, Read
from orchestrator.engine.failures import FailurePolicy
from orchestrator.engine.finalize import Finalizer, Sweep
from orchestrator.engine.ids import manual_id, scheduled_id
from orchestrator.engine.journal import Journal
from orchestrator.engine.reconcile import Reconciler
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.seal import Sealer
from orchestrator.errors import IllegalTransition, NeedsAttention, PathBusy, RetryLater, reason_of
from orchestrator.log import get_logger
from orchestrator.routing import RoutingTable, Rule
from orchestrator.settings import Settings
from orchestrator.state import pending as ledger
from orchestrator.state.due import DueQueue
from orchestrator.state.outbox import Outbox
from orchestrator.state.runs import LEASED_STATES, RunRecord, RunStore
from orchestrator.vault.client import VaultClient
from rotators.contract import Rotator, SecretVersion
from rotators.errors import PermanentError

#: A worker's Redis client never waits forever on a dead or partitioned Redis (seconds).
REDIS_TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
    "health_check_interval": 30,
}

#: The name ``tests/unit/test_engine.py`` knows the failure reason by.
_reason = reason_of


@dataclass(frozen=True)
class RotateRequest:
    """The keyword arguments of ``scaivault.rotate`` (ids and paths only, never secret data).

    ``rotation_id`` is set only when the sweeper re-drives a rotation whose worker died.
    """

    path: str
    trigger: str = "schedule"
    event_id: str | None = None
    from_version: int | None = None
    grace_period: str | None = None
    actor: str | None = None
    reason: str | None = None
    rotation_id: str | None = None


#: Seconds added to the time since a read when judging whether another run changed the secret
#: after it (covers the round trip of the create that reports that run's last change).
_READ_MARGIN = 1.0

_LOGGER = "orchestrator.engine.core"

#: End states without a new version: a later due event for the same version starts over.
_RESTARTABLE = ("skipped", "cancelled", "failed")


def new_record(
    request: RotateRequest,
    rid: str,
    rule: Rule | None,
    from_version: int | None,
    state: str,
    grace: str,
) -> RunRecord:
    """The run record a request starts as (in ``state``; ``step`` is ``claim``)."""
    return RunRecord(
        rotation_id=rid,
        path=request.path,
        state=state,
        step="claim",
        trigger=request.trigger,
        rotator=rule.rotator if rule else None,
        event_id=request.event_id,
        actor=request.actor,
        reason=request.reason,
        from_version=from_version,
        grace_period=grace,
    )


class _Settle:
    """Takes a request's event out of the pending ledger, once: queued on the journal's outbox
    as soon as the request has a run record or a recorded decision (see :meth:`Engine.rotate`)."""

    def __init__(self, journal: Journal, event_id: str | None) -> None:
        self.journal = journal
        self.event_id = event_id

    def __call__(self) -> None:
        event_id, self.event_id = self.event_id, None
        if event_id is not None:
            self.journal.outbox.queue(
                lambda pipe: ledger.queue_settle(pipe, event_id),
                "ledger_settle_failed",
                event_id=event_id,
            )


class Engine:
    """Runs rotations. One instance per worker process (it holds connections)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        vault: VaultClient,
        routing: RoutingTable,
        *,
        sealer: Sealer | None = None,
        alerter: Alerter | None = None,
        sleep: Any = time.sleep,
    ) -> None:
        self.settings = settings
        self.client = client
        self.log = get_logger(_LOGGER)
        outbox = Outbox(client, self.log)
        self.store = RunStore(client, outbox)
        self.due = DueQueue(client)
        self.vault = vault
        self.routing = routing
        self.sealer = sealer
        self.alerter = alerter
        self._lease = settings.rotator_lease_seconds
        self.journal = Journal(outbox, self.log, _LOGGER)
        runtime = Runtime(settings, self.store, self.due, vault, routing, self.journal, self.log)
        self._keeper = runtime.keeper
        self.failures = FailurePolicy(runtime, alerter)
        minter = Minter(runtime, sealer, sleep)
        self.driver = Driver(runtime, minter, self.failures, sleep)
        self.finalizer = Finalizer(runtime, minter, self.failures)
        self.reconciler = Reconciler(runtime)

    @classmethod
    def from_settings(cls, settings: Settings, routing: RoutingTable | None = None) -> Engine:
        """An engine wired from ``settings``: Redis, ScaiVault, routing file, seal key, alerts."""
        return cls(
            settings,
            connection.redis_client(
                settings.redis_url, master=settings.redis_sentinel_master, **REDIS_TIMEOUTS
            ),
            VaultClient(settings),
            routing or RoutingTable.load(settings.rotator_config),
            sealer=Sealer(settings.seal_keys()) if settings.seal_keys() else None,
            alerter=Alerter(settings.rotator_alert_webhook_url),
        )

    def close(self) -> None:
        """Close the ScaiVault and Redis connections and stop the lease keeper's thread."""
        self._keeper.close()
        self.vault.close()
        self.client.close()

    # --- starting a rotation -----------------------------------------------------------------

    def rotate(self, request: RotateRequest, owner: str) -> RunRecord | None:
        """Handle one ``scaivault.rotate``: start, merge into the active run, or skip.

        ``owner`` identifies this attempt (the Celery task id, stable across its retries). Once
        the request has a run record or a recorded decision (it returns, or the run retries
        later), its event leaves the pending ledger (:mod:`orchestrator.state.pending`) with the
        next round trip to Redis: a run this request created, with its first state change.
        """
        settle = _Settle(self.journal, request.event_id)
        try:
            if request.rotation_id:
                result = self.drive(request.rotation_id, owner)
            else:
                result = self._rotate(request, owner, settle)
        except RetryLater:
            settle()
            raise
        else:
            settle()
            return result
        finally:
            self.journal.flush()

    def _rotate(self, request: RotateRequest, owner: str, settle: _Settle) -> RunRecord | None:
        about = {"path": request.path, "event_id": request.event_id}  # on its log lines
        rule = self.routing.match(request.path)
        grace = self._grace_text(request, rule)
        if rule is None:  # not ours to rotate: decided without asking ScaiVault
            rid = self._first_rid(request, request.from_version)
            record = new_record(request, rid, None, request.from_version, "skipped", grace)
            return self._skip(record, "no rule in the routing file matches this path")
        try:
            started = time.monotonic()
            current = self.vault.read(request.path)
            read = Read(current, time.monotonic() - started)
        except PermanentError as exc:  # e.g. not_found, access_denied: nothing to rotate
            rid = self._first_rid(request, request.from_version)
            record = new_record(request, rid, rule, request.from_version, "failed", grace)
            reason = f"cannot read the secret: {reason_of(exc)}"
            return self.failures.refuse(record, reason, expire=self._decision_ttl)
        # An event names the version it rotates; version 0 never exists, so it is stale too.
        from_version = current.version if request.from_version is None else request.from_version
        scheduled = request.trigger == "schedule"
        rid = scheduled_id(request.path, from_version) if scheduled else manual_id()
        if from_version == current.version:
            # The usual case: start at once. Any run already there (this id, or another run
            # holding the path) refuses the create, and the request is decided below as if
            # this attempt had not been made.
            record = new_record(request, rid, rule, from_version, "queued", grace)
            try:
                created, quiet_for = self.store.start(record, lease=(owner, self._lease))
            except (PathBusy, IllegalTransition):
                pass
            else:
                # The read is reused unless the path's previous run changed since it began
                # (it may have written a version: a rollback, say); then the driver reads again.
                since_read = time.monotonic() - started + _READ_MARGIN
                fresh = quiet_for is None or quiet_for > since_read
                return self._start(created, owner, settle, read if fresh else None)
        existing, active = self.store.lookup(rid, request.path)
        if scheduled and (event_rid := self._event_rid(request, from_version, existing)) != rid:
            rid = event_rid
            existing, active = self.store.lookup(rid, request.path)
        if existing is not None and existing.path != request.path:
            # Ids derive from (path, version), but metadata is writable: a run of another path
            # under this id (planted metadata rebuilt by reconcile) is never merged into.
            self.log.warning("rotation_id_taken", rotation_id=rid, holder=existing.path, **about)
            rid = manual_id()
            existing, active = self.store.lookup(rid, request.path)
        if existing is not None:
            if existing.state in LEASED_STATES:
                return self.drive(rid, owner)
            self.log.info("rotation_duplicate", rotation_id=rid, state=existing.state, **about)
            return existing
        if (
            active is not None
            and active.state in LEASED_STATES
            and (active.from_version == from_version or active.state == "queued")
        ):
            self.log.info("rotation_merged", rotation_id=active.rotation_id, merged=rid, **about)
            return self.drive(active.rotation_id, owner)
        problem = self._why_not_start(current, from_version, active)
        state = "skipped" if problem else "queued"
        record = new_record(request, rid, rule, from_version, state, grace)
        if problem is not None:
            return self._skip(record, problem)
        try:
            record = self.store.create(record, lease=(owner, self._lease))
        except PathBusy as exc:
            return self._skip(record, f"rotation {exc.holder} holds this path")
        except IllegalTransition:  # a concurrent delivery created it first: merge
            return self.drive(rid, owner)
        return self._start(record, owner, settle, None)  # other runs were here: read again

    def _first_rid(self, request: RotateRequest, from_version: int | None) -> str:
        """The id of a request decided before the secret was read: a scheduled one's own,
        so every delivery of the same event names the same decision."""
        if request.trigger == "schedule" and from_version is not None:
            return self.scheduled_rid(request, from_version)
        return manual_id()

    @property
    def _decision_ttl(self) -> float:
        """How long a record that stored nothing (skipped, refused at the claim) is kept: as
        long as the receiver remembers the event ids, so duplicates still find it."""
        return self.settings.decision_ttl().total_seconds()

    def _start(
        self, created: RunRecord, owner: str, settle: _Settle, read: Read | None
    ) -> RunRecord | None:
        """Drive a run this task just created with its lease (``read``: the version it read
        before, when no other run can have changed the secret since). The run exists now, so
        its event leaves the ledger with the run's next round trip, not one of its own."""
        self.journal.history(
            created, "rotation_started", state="queued", from_version=created.from_version
        )
        settle()
        return self._run_leased(created, owner, read)

    def scheduled_rid(self, request: RotateRequest, from_version: int) -> str:
        """The id of a scheduled rotation: one per (path, version), unless that run ended
        without a new version (skipped, cancelled, failed): then a later due event for the
        same version starts a run of its own, keyed by its event id. An id a run of another
        path holds (planted metadata) is never used."""
        earlier = self.store.get(scheduled_id(request.path, from_version))
        rid = self._event_rid(request, from_version, earlier)
        holder = earlier if rid == scheduled_id(request.path, from_version) else self.store.get(rid)
        return rid if holder is None or holder.path == request.path else manual_id()

    def _event_rid(
        self, request: RotateRequest, from_version: int, earlier: RunRecord | None
    ) -> str:
        """:meth:`scheduled_rid`, given the run of (path, version) as ``earlier``."""
        rid = scheduled_id(request.path, from_version)
        if earlier is not None and earlier.path != request.path:
            return scheduled_id(request.path, from_version, request.event_id)
        if (
            earlier is None
            or earlier.state not in _RESTARTABLE
            or earlier.new_version is not None
            or earlier.event_id == request.event_id
        ):
            return rid
        return scheduled_id(request.path, from_version, request.event_id)

    def _why_not_start(
        self, current: SecretVersion, from_version: int, active: RunRecord | None
    ) -> str | None:
        if active is not None:
            return f"rotation {active.rotation_id} is {active.state} on this path"
        if from_version != current.version:
            return f"stale request: it rotates version {from_version}, current is {current.version}"
        return None

    def _grace_text(self, request: RotateRequest, rule: Rule | None) -> str:
        """The run's grace period: the request's, else the rule's, else the default. A signed
        event's (it has an event id) is raised to ``ROTATOR_MIN_GRACE``: whoever holds the
        webhook secret must not be able to get old credentials revoked at once. A request's
        that does not parse or is over ``MAX_DURATION`` (a message queued by an older release)
        is ignored with a warning rather than failing the run later, at store."""
        requested = request.grace_period
        if requested:
            try:
                grace = parse_duration(requested)
            except ValueError:
                self.log.warning("grace_period_ignored", grace_period=requested[:40])
            else:
                floor = self.settings.min_grace()
                if request.event_id is not None and grace < floor:
                    self.log.warning(
                        "grace_period_raised",
                        path=request.path,
                        event_id=request.event_id,
                        grace_period=format_duration(grace),
                        minimum=format_duration(floor),
                    )
                    grace = floor
                return format_duration(grace)
        if rule is not None and rule.grace_period is not None:
            return format_duration(rule.grace_period)
        return self.settings.rotator_default_grace

    def _skip(self, record: RunRecord, reason: str) -> RunRecord:
        """Record a request decided without a run: it expires like the event's dedupe claim.

        An unrouted path gets no history stream of its own (a forged event must not create
        keys that never expire), but an alert: it is a configuration problem."""
        skipped = RunRecord(**{**record.to_dict(), "state": "skipped", "last_error": reason})
        try:
            self.store.create(skipped, expire=self._decision_ttl)
        except IllegalTransition:
            return self.store.require(record.rotation_id)
        self.log.info(
            "rotation_skipped", rotation_id=record.rotation_id, path=record.path, reason=reason
        )
        self.journal.outcome(record.rotator, "skipped")
        if record.rotator is None:
            self.failures.alert(skipped, "skipped", reason, "claim")
            return skipped
        self.journal.history(
            record, "rotation_skipped", state="skipped", outcome="skipped", detail=reason
        )
        return skipped

    # --- driving, finalizing, beat jobs -------------------------------------------------------

    def drive(self, rotation_id: str, owner: str) -> RunRecord | None:
        """Take the run's lease and carry it as far as it goes now (grace, or a failure).

        Returns the run record afterwards; does nothing if another live worker drives it.
        Raises :class:`RetryLater` for transient failures within the attempt budget.
        """
        try:
            return self._drive(rotation_id, owner)
        finally:
            self.journal.flush()

    def _drive(self, rotation_id: str, owner: str) -> RunRecord | None:
        leased = self.store.acquire(rotation_id, owner, self._lease)
        if leased is None:
            record = self.store.get(rotation_id)
            self.log.info(
                "rotation_not_driven",
                rotation_id=rotation_id,
                state=record.state if record else None,
            )
            return record
        return self._run_leased(leased, owner)

    def _run_leased(
        self, leased: RunRecord, owner: str, read: Read | None = None
    ) -> RunRecord | None:
        """Carry a run this worker holds the lease of as far as it goes now (``read``: the
        version this task read just before it created the run; not read again)."""
        rotation_id = leased.rotation_id
        if leased.state == "finalizing":
            return self.finalizer.finalize_leased(leased, owner, None)
        settled: list[RunRecord] = []

        def steps(rotator: Rotator) -> None:
            stored = self.driver.run(leased, rotator, owner, read)
            settled.extend([stored] if stored else [])

        def give_up(exc: Exception) -> None:  # an updater's new value may be applied already
            held = isinstance(exc, NeedsAttention) or self.store.may_be_applied(rotation_id)
            state = "needs_attention" if held else "failed"
            step = self.journal.failed_step(rotation_id)
            if step is None:
                now = self.store.get(rotation_id)
                step = now.step if now else None
            self.failures.fail(rotation_id, state, reason_of(exc, step), owner, step=step)

        self.failures.run(leased, owner, steps, give_up)
        return settled[0] if settled else self.store.get(rotation_id)

    def finalize(self, rotation_id: str, owner: str, lease: int | None = None) -> RunRecord | None:
        """Finalize a rotation whose grace is over (see :meth:`Finalizer.finalize`)."""
        try:
            return self.finalizer.finalize(rotation_id, owner, lease)
        finally:
            self.journal.flush()

    def sweep(self, limit: int = 200) -> Sweep:
        """Claim due finalizations and runs whose lease expired (their worker died)."""
        try:
            return self.finalizer.sweep(limit)
        finally:
            self.journal.flush()

    def refuse(self, record: RunRecord, reason: str) -> RunRecord:
        """Record a request that failed before it could start (see :meth:`FailurePolicy.refuse`)."""
        try:
            return self.failures.refuse(record, reason)
        finally:
            self.journal.flush()

    def reconcile(self) -> int:
        """Re-add due-queue entries from ScaiVault metadata; returns how many were added."""
        try:
            return self.reconciler.reconcile()
        finally:
            self.journal.flush()


__all__ = [
    "ROTATED_BY",
    "Engine",
    "NeedsAttention",
    "RetryLater",
    "RotateRequest",
    "Sweep",
    "manual_id",
    "scheduled_id",
]
