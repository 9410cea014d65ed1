"""Target budgets in the engine: the slot a run holds at its target while its steps run, and
what a run without one does.

A run takes a slot of its rule's target (:attr:`~orchestrator.routing.Rule.target`) before
its first step that touches the target, for the rotate steps and for finalize alike; a
vault-only rotator touches none and an unlimited budget needs none (no Redis call). The slot is
renewed with the run's lease and given back when the steps end, however they end; a SIGKILLed
worker's slot expires with its lease. A run without a slot records ``slot_wait``, gives its
attempt back (waiting is not failing), lets go of its lease and waits in the due-queue without
holding a worker process: the next released slot of its target wakes it (oldest first); its
due entry's delay is the safety net, 1-2 s for the next in line and longer further back, so a
long line is not handed out again every second.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.errors import IllegalTransition, LeaseLost
from orchestrator.state.records import LEASED, RunRecord, RunState
from orchestrator.state.slots import Slots, Wake

if TYPE_CHECKING:
    from orchestrator.engine.runtime import Runtime
    from orchestrator.routing import Budget
    from rotators.contract import Rotator

#: Hands a woken waiter to a worker now (the worker's tasks publish ``scaivault.finalize``
#: with the due claim); without one, a woken waiter is simply due at once.
WakeUp = Callable[[Wake], None]
#: The first delay of a waiter's due entry, in seconds (jittered between the two).
WAIT_DELAY = (1.0, 2.0)


class Slot:
    """A slot of a target held for the run's steps (or none needed: every method a no-op)."""

    def __init__(
        self,
        budgets: Budgets | None = None,
        target: str = "",
        holder: str = "",
        limit: int = 0,
        rotation_id: str = "",
    ) -> None:
        self._budgets = budgets
        self.target = target
        self.holder = holder
        self.limit = limit
        self.rotation_id = rotation_id

    def renew(self) -> None:
        """Extend the slot's lease (the lease keeper's thread calls this with the run's)."""
        if self._budgets is not None:
            self._budgets.renew(self)

    def release(self) -> None:
        """Give the slot back and wake the target's oldest waiter (once; later calls do nothing)."""
        budgets, self._budgets = self._budgets, None
        if budgets is not None:
            budgets.release(self)


class Budgets:
    """Takes, renews and gives back target slots; puts runs without one to wait."""

    def __init__(self, runtime: Runtime, slots: Slots, wake: WakeUp | None = None) -> None:
        self.rt = runtime
        self.slots = slots
        self._wake = wake
        # Without a publisher, a woken waiter's due entry is made due at once, not claimed.
        self._claim = runtime.settings.rotator_finalize_lease if wake is not None else 0.0

    def take(
        self,
        record: RunRecord,
        budget: Budget,
        rotator: Rotator,
        *,
        phase: str | None = None,
        lease: float | None = None,
        owner: str = "",
        note_wait: bool = False,
    ) -> Slot | None:
        """A slot of ``budget``'s target for ``record``'s steps now, or None when all are taken.

        ``phase`` names the holder's part (``rotate`` or ``finalize`` by the run's state, else
        e.g. ``rollback``); ``lease`` (seconds) defaults to the run's lease, renewed with it.
        ``owner`` (the task driving the run) is part of the holder's name, so a worker that lost
        the run's lease to another cannot give back the other's slot; the lost one's slot counts
        until its lease passes. ``note_wait`` records ``slot_wait`` on the run when none is
        free (a rollback's held run, which waits in its task, not through :meth:`wait`)."""
        rid = record.rotation_id
        before_grace = record.state in LEASED and record.state != RunState.FINALIZING
        if budget.limit is None or not rotator.capabilities.touches_target:
            if record.slot_wait and phase is None:  # it waited; the routing file lifted the limit
                self.slots.forget_wait(record.slot_wait, rid)
                self.rt.runs.update(record, slot_wait=None)
                if before_grace:  # its due entry stood only for the wait
                    self.rt.due.remove(rid)
            return Slot()
        phase = phase or ("rotate" if before_grace else "finalize")
        holder = f"{rid}:{phase}:{owner}" if owner else f"{rid}:{phase}"
        seconds = lease or self.rt.lease_seconds
        taken = self.slots.acquire(budget.target, budget.limit, holder, seconds,
                                   rotation_id=rid, drop_due=before_grace,
                                   note_wait=note_wait)  # fmt: skip
        return Slot(self, budget.target, holder, budget.limit, rid) if taken else None

    def renew(self, slot: Slot) -> None:
        """Extend ``slot``'s lease; one that lapsed (the keeper starved, Redis away) is taken
        again if a slot is free, else the run's lease counts as lost: its steps stop before
        they touch the target again (raises :class:`LeaseLost` to the heartbeat)."""
        seconds = self.rt.lease_seconds
        if self.slots.renew(slot.target, slot.holder, seconds):
            return
        if self.slots.acquire(slot.target, slot.limit, slot.holder, seconds,
                              rotation_id=slot.rotation_id):  # fmt: skip
            return
        self.rt.log.warning("slot_lost", target=slot.target, holder=slot.holder)
        raise LeaseLost(
            f"the slot of target {slot.target} lapsed and every slot is taken",
            rotation_id=slot.rotation_id,
        )

    def release(self, slot: Slot) -> None:
        try:
            woken = self.slots.release(slot.target, slot.holder, self._claim)
        except Exception as exc:  # the slot's lease gives it back anyway
            self.rt.log.warning("slot_release_failed", target=slot.target,
                                reason=type(exc).__name__)  # fmt: skip
            return
        if woken is not None:
            self.wake(woken)

    def wait(self, record: RunRecord, budget: Budget, owner: str) -> None:
        """``record`` found no slot: record the wait, give its attempt and lease back, and queue
        it in the due-queue (woken by the next released slot, due again after a short delay)."""
        assert budget.limit is not None
        rid = record.rotation_id
        attempts = max(record.attempts - 1, 0)
        try:
            if record.state == RunState.FINALIZING:
                # A finalize waits back in grace, where on-call can still roll it back or
                # finalize it; the due entry (set below) brings it back.
                self.rt.runs.transition(record, RunState.GRACE, owner=owner, step="grace",
                                        slot_wait=budget.target, attempts=attempts)  # fmt: skip
            else:
                self.rt.runs.update(record, owner=owner, slot_wait=budget.target,
                                    attempts=attempts)  # fmt: skip
                # Off the re-drive list meanwhile: the due entry brings it back.
                self.rt.runs.release_lease(rid, owner, self.rt.settings.rotator_finalize_lease)
        except (LeaseLost, IllegalTransition):
            return
        woken = self.slots.wait(
            budget.target,
            budget.limit,
            rid,
            delay=random.uniform(*WAIT_DELAY),
            growth=self.rt.lease_seconds,
            longest=self.rt.settings.rotator_finalize_lease,
            claim_seconds=self._claim,
        )
        if record.slot_wait is None:  # the first time: later re-checks say nothing new
            self.rt.log.info("slot_wait", rotation_id=rid, path=record.path, target=budget.target,
                             state=record.state)  # fmt: skip
            detail = f"waits for a slot of target {budget.describe()}"
            self.rt.runs.history(record, "slot_wait", state=record.state, detail=detail)
        if woken is not None:
            self.wake(woken)

    def wake(self, woken: Wake) -> None:
        """Hand a woken waiter to a worker now."""
        if self._wake is None:
            return
        try:
            self._wake(woken)
        except Exception as exc:  # its due entry comes back once the claim passes
            self.rt.log.warning("slot_wake_failed", rotation_id=woken.rotation_id,
                                reason=type(exc).__name__)  # fmt: skip
