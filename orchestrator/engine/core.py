"""The rotation engine: the one object the worker's tasks call (docs/architecture.md#the-protocol).

Celery-free on purpose: :mod:`orchestrator.worker.tasks` calls it. One worker drives a rotation
at a time: it holds the run's lease (renewed by the lease keeper while it works) and every
state change is checked against that lease in Redis, so a worker that lost its lease stops at
its next step. A worker that dies leaves an expiring lease that the sweep re-drives.

Following one rotate request: :mod:`~orchestrator.engine.claim` decides what it becomes (a new
run, a merge, a decision); :mod:`~orchestrator.engine.steps` runs a leased run's steps under
its lease; :mod:`~orchestrator.engine.driver` carries it from reading version N to grace, with
:mod:`~orchestrator.engine.credential` for the new value; :mod:`~orchestrator.engine.finalize`
revokes the old credential once grace is over; :mod:`~orchestrator.engine.failures` makes every
failure loud. Every change of a run and everything recorded about it goes through the
:class:`~orchestrator.state.recorder.Recorder`; each entry point ends by sending what it queued.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from orchestrator import connection
from orchestrator.engine.alerts import Alerter
from orchestrator.engine.budget import Budgets, WakeUp
from orchestrator.engine.claim import Claims
from orchestrator.engine.credential import Minter
from orchestrator.engine.driver import Driver, Read
from orchestrator.engine.failures import Failures
from orchestrator.engine.finalize import Finalizer
from orchestrator.engine.reconcile import Reconciler
from orchestrator.engine.rollback import Rollback, RollbackRequest
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.seal import Sealer
from orchestrator.engine.steps import StepRunner
from orchestrator.engine.sweep import Sweep, Sweeper
from orchestrator.errors import NeedsAttention, RetryLater, reason_of
from orchestrator.log import get_logger
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings
from orchestrator.state.due import DueQueue
from orchestrator.state.messages import RotateRequest
from orchestrator.state.recorder import Recorder
from orchestrator.state.records import LEASED, RunRecord, RunState
from orchestrator.state.slots import Slots
from orchestrator.vault.client import VaultClient
from rotators.contract import Rotator

#: A worker's Redis client never waits forever on a dead or partitioned Redis (seconds).
REDIS_TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
    "health_check_interval": 30,
}

_LOGGER = "orchestrator.engine"
#: The states of a run before grace: in the due-queue only while it waits for a target slot.
_BEFORE_GRACE = LEASED - {RunState.FINALIZING}
T = TypeVar("T")


def worker_name() -> str:
    """This process as on-call sees it holding a run: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        wake: WakeUp | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.log = get_logger(_LOGGER)
        self.store = Recorder(client, self.log, _LOGGER, worker=worker_name())
        self.vault = vault
        self.routing = routing
        runtime = Runtime(settings, self.store, DueQueue(client), vault, routing, self.log)
        self._keeper = runtime.keeper
        self.failures = Failures(runtime, alerter)
        vault.on_retry = self.failures.vault_retrying
        self.budgets = Budgets(runtime, Slots(client), wake)
        self.steps = StepRunner(runtime, self.failures, self.budgets)
        self.claims = Claims(runtime, self.failures)
        minter = Minter(runtime, sealer, sleep, self.failures)
        self.driver = Driver(runtime, minter, self.failures, sleep)
        self.finalizer = Finalizer(runtime, minter, self.failures, self.steps)
        self.rollbacks = Rollback(runtime, minter, self.failures, self.budgets)
        self.sweeper = Sweeper(runtime, self.claims)
        self.reconciler = Reconciler(runtime)

    @classmethod
    def from_settings(
        cls, settings: Settings, routing: RoutingTable | None = None, wake: WakeUp | None = None
    ) -> Engine:
        """An engine wired from ``settings``: Redis, ScaiVault, routing file, seal key, alerts
        (``wake`` hands a run woken by a released target slot to a worker)."""
        return cls(
            settings,
            connection.redis_client(
                settings.redis_url, master=settings.redis_sentinel_master, **REDIS_TIMEOUTS
            ),
            VaultClient(settings),
            routing or RoutingTable.load(settings.rotator_config),
            sealer=Sealer(settings.seal_keys()) if settings.seal_keys() else None,
            alerter=Alerter(settings.rotator_alert_webhook_url),
            wake=wake,
        )

    def close(self) -> None:
        """Close the ScaiVault and Redis connections and stop the lease keeper's thread."""
        self._keeper.close()
        self.vault.close()
        self.client.close()

    # --- entry points: each sends what it queued when it ends ---------------------------------

    def rotate(self, request: RotateRequest, owner: str) -> RunRecord | None:
        """Handle one ``scaivault.rotate``: start, merge into the active run, or decide.

        ``owner`` identifies this attempt (the Celery task id, stable across its retries). Once
        the request has a run record or a recorded decision (it returns, or the run retries
        later), its event leaves the pending events with the next round trip to Redis: for a
        run this request created, the run's first state change.
        """
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled and request.event_id is not None:
                self.store.settle(request.event_id)
            settled = True

        try:
            return self._rotate(request, owner, settle)
        except RetryLater:
            settle()
            raise
        finally:
            self.store.flush()

    def _rotate(
        self, request: RotateRequest, owner: str, settle: Callable[[], None]
    ) -> RunRecord | None:
        if request.rotation_id:
            result = self._drive(request.rotation_id, owner)
            settle()
            return result
        claim = self.claims.claim(request, owner)
        if claim.created is not None:
            created = claim.created
            self.store.history(
                created, "rotation_started", state="queued", from_version=created.from_version
            )
            settle()  # rides along with the run's first state change
            return self._run_leased(created, owner, claim.read)
        settle()
        if claim.drive is not None:
            return self._drive(claim.drive, owner)
        return claim.decided

    def drive(self, rotation_id: str, owner: str) -> RunRecord | None:
        """Take the run's lease and carry it as far as it goes now (grace, or a failure).

        Returns the run record afterwards; does nothing if another live worker drives it.
        Raises :class:`RetryLater` for transient failures within the attempt budget.
        """
        return self._flushed(lambda: self._drive(rotation_id, owner))

    def finalize(self, rotation_id: str, owner: str, lease: int | None = None) -> RunRecord | None:
        """Handle a due entry: finalize a rotation whose grace is over (see
        :meth:`Finalizer.finalize`), or drive a run before grace that waited for a slot of its
        target (:mod:`~orchestrator.engine.budget`)."""
        return self._flushed(lambda: self._due(rotation_id, owner, lease))

    def _due(self, rotation_id: str, owner: str, lease: int | None) -> RunRecord | None:
        record = self.store.get(rotation_id)
        if record is not None and record.state in _BEFORE_GRACE:  # waited for a target slot
            return self._drive(rotation_id, owner)
        return self.finalizer.finalize(rotation_id, owner, lease, record=record)

    def rollback(self, request: RollbackRequest, owner: str) -> RunRecord | None:
        """Roll a rotation in grace back (see :class:`~orchestrator.engine.rollback.Rollback`)."""
        return self._flushed(lambda: self.rollbacks.roll_back(request, owner))

    def sweep(self, limit: int = 200) -> Sweep:
        """Claim due finalizations, runs whose lease expired, and lost event messages."""
        return self._flushed(lambda: self.sweeper.sweep(limit))

    def refuse(self, request: RotateRequest, reason: str) -> RunRecord:
        """Record a request that could not start as a ``failed`` run, loudly."""
        return self._flushed(lambda: self.claims.refuse(request, reason))

    def reconcile(self) -> int:
        """Re-add due-queue entries from ScaiVault metadata; returns how many were added."""
        return self._flushed(self.reconciler.reconcile)

    def _flushed(self, work: Callable[[], T]) -> T:
        try:
            return work()
        finally:
            self.store.flush()

    # --- driving a leased run -------------------------------------------------------------

    def _drive(self, rotation_id: str, owner: str) -> RunRecord | None:
        leased = self.store.acquire(rotation_id, owner, self.settings.rotator_lease_seconds)
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
        if leased.state == RunState.FINALIZING:
            return self.finalizer.finalize_leased(leased, owner, None)
        settled: list[RunRecord] = []

        def steps(rotator: Rotator) -> None:
            stored = self.driver.run(leased, rotator, owner, read)
            settled.extend([stored] if stored else [])

        def give_up(exc: Exception) -> None:  # an updater's new value may be applied already
            held = isinstance(exc, NeedsAttention) or self.store.may_be_applied(rotation_id)
            state = RunState.NEEDS_ATTENTION if held else RunState.FAILED
            step = self.store.failed_step(rotation_id)
            if step is None:
                now = self.store.get(rotation_id)
                step = now.step if now else None
            self.failures.fail(rotation_id, state, reason_of(exc, step), owner, step=step)

        self.steps.run(leased, owner, steps, give_up)
        return settled[0] if settled else self.store.get(rotation_id)
