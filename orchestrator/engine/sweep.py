"""The sweep beat runs: due finalizations, runs whose worker died, and accepted events whose
task message was lost.

Every due entry is claimed, in batches, with a lease on Redis's clock (an entry whose finalize
task is lost comes back once the lease passes); runs whose lease expired are handed back to be
re-driven; a pending event whose message is neither queued nor held by a worker is published
again, and one lost more than ``ROTATOR_MAX_ATTEMPTS`` times becomes a ``failed`` run, loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.engine.claim import Claims
from orchestrator.engine.runtime import Runtime
from orchestrator.state.messages import RotateRequest
from orchestrator.state.pending import PendingEvent, PendingEvents
from orchestrator.state.records import LEASED, RunRecord

#: Due entries one claim script hands out, and how many claims one sweep makes at most.
DUE_BATCH = 500
DUE_BATCHES = 100


@dataclass(frozen=True)
class Sweep:
    """What one sweep found: due finalizations ``(rotation_id, lease)``, runs to re-drive, and
    the ids of events whose task message was published again."""

    due: list[tuple[str, int]] = field(default_factory=list)
    redrive: list[RunRecord] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)


class Sweeper:
    """Claims what is due and finds what was lost."""

    def __init__(self, runtime: Runtime, claims: Claims) -> None:
        self.rt = runtime
        self.claims = claims
        self.pending = PendingEvents(runtime.runs.client)

    def sweep(self, limit: int = 200) -> Sweep:
        """One sweep: every due entry (claimed in batches of :data:`DUE_BATCH`, so each script
        stays short; target budgets, not the sweep, pace the work) and at most ``limit``
        expired leases."""
        return Sweep(self._due(), self._expired(limit), self._lost_events())

    def _due(self) -> list[tuple[str, int]]:
        lease = int(self.rt.settings.rotator_finalize_lease * 1000)
        due: list[tuple[str, int]] = []
        for _ in range(DUE_BATCHES):
            batch = self.rt.due.claim(lease, DUE_BATCH)
            due += batch
            if len(batch) < DUE_BATCH:
                break
        return due

    def _expired(self, limit: int) -> list[RunRecord]:
        redrive = []
        for rotation_id in self.rt.runs.claim_expired(self.rt.lease_seconds, limit):
            record = self.rt.runs.get(rotation_id)
            if record is None or record.state not in LEASED:
                self.rt.runs.forget_expired_lease(rotation_id)
                continue
            if record.slot_wait and self.rt.due.score(rotation_id) is not None:
                continue  # waits for a slot of its target: its due entry brings it back
            self.rt.log.warning(
                "rotation_redriven", rotation_id=rotation_id, path=record.path, state=record.state
            )
            redrive.append(record)
        return redrive

    def _lost_events(self) -> list[str]:
        settings = self.rt.settings
        swept = self.pending.republish(
            settings.rotator_pending_republish_after, settings.rotator_max_attempts
        )
        for entry in swept.exhausted:
            self._give_up(entry)
            self.pending.settle(entry.event_id)
        return swept.published

    def _give_up(self, entry: PendingEvent) -> None:
        try:
            request = RotateRequest.from_kwargs({**entry.kwargs, "event_id": entry.event_id})
        except ValueError:  # no message to tell which path (the receiver always writes one)
            return
        reason = f"the event's task was lost {entry.publishes + 1} times; gave up"
        self.claims.refuse(request, reason)
