"""Finalizing rotations whose grace is over, and the sweep that finds them and dead workers' runs.

Finalize runs only once grace is over on Redis's clock (or on-call asked for it early: the run
record's ``finalize_requested``), checks that ScaiVault's current version is still ours,
re-verifies it, then revokes the old one (``rotator.finalize``) and marks the run ``done``. A run
held by a rollback is never moved on. After the store, a failure is never just "failed": it
needs attention, and the old credential stays valid. The due-queue entry is removed only while
the sweeper's claim on it still matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.engine.credential import Minter
from orchestrator.engine.failures import FailurePolicy
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import FinalizeTooEarly, IllegalTransition, NeedsAttention, reason_of
from orchestrator.state.runs import LEASED_STATES, TERMINAL_STATES, RunRecord
from rotators.contract import Rotator
from rotators.errors import CredentialRejected


@dataclass(frozen=True)
class Sweep:
    """What one sweep claimed: due finalizations ``(rotation_id, lease)`` and runs to re-drive."""

    due: list[tuple[str, int]] = field(default_factory=list)
    redrive: list[RunRecord] = field(default_factory=list)


class Finalizer:
    """Finalizes rotations in grace once due; sweeps the due queue and expired leases."""

    def __init__(self, runtime: Runtime, minter: Minter, failures: FailurePolicy) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures

    def finalize(self, rotation_id: str, owner: str, lease: int | None = None) -> RunRecord | None:
        """Finalize a rotation whose grace period is over: re-verify new, revoke old, ``done``.

        ``lease`` is the due-queue claim the sweeper gave this task; the entry is removed only
        while it still matches. Without one (on-call, re-drive) the entry is removed when done.
        """
        record = self.rt.store.get(rotation_id)
        if record is None or record.state in TERMINAL_STATES or record.state == "needs_attention":
            self._complete_due(rotation_id, lease)
            return record
        if record.state == "grace":
            try:
                record = self.rt.store.begin_finalize(record)
            except FinalizeTooEarly as exc:  # the due entry stays: claimed again after its lease
                self.rt.log.warning(
                    "finalize_refused", rotation_id=rotation_id, path=record.path, reason=str(exc)
                )
                return record
            except IllegalTransition:
                return self.rt.store.get(rotation_id)
        if record.state != "finalizing":
            return record
        leased = self.rt.store.acquire(rotation_id, owner, self.rt.lease_seconds)
        if leased is None:
            return self.rt.store.get(rotation_id)
        return self.finalize_leased(leased, owner, lease)

    def finalize_leased(self, record: RunRecord, owner: str, lease: int | None) -> RunRecord | None:
        """Finalize ``record`` whose lease ``owner`` holds (also a re-driven ``finalizing``)."""
        rid = record.rotation_id

        def give_up(exc: Exception) -> None:  # after the store, never just "failed"
            reason = reason_of(exc, "finalize")
            self.failures.fail(rid, "needs_attention", reason, owner, step="finalize")

        def steps(rotator: Rotator) -> None:
            self._finalize_steps(record, rotator, owner)

        if self.failures.run(record, owner, steps, give_up):
            self._complete_due(rid, lease)
        return self.rt.store.get(rid)

    def sweep(self, limit: int = 200) -> Sweep:
        """Claim due finalizations and runs whose lease expired (their worker died)."""
        due = self.rt.due.claim(int(self.rt.settings.rotator_finalize_lease * 1000), limit)
        redrive = []
        for rotation_id in self.rt.store.claim_expired(self.rt.lease_seconds, limit):
            record = self.rt.store.get(rotation_id)
            if record is None or record.state not in LEASED_STATES:
                self.rt.store.forget_expired_lease(rotation_id)
                continue
            self.rt.log.warning(
                "rotation_redriven", rotation_id=rotation_id, path=record.path, state=record.state
            )
            redrive.append(record)
        return Sweep(due, redrive)

    def _finalize_steps(self, record: RunRecord, rotator: Rotator, owner: str) -> None:
        rid = record.rotation_id
        if record.from_version is None or record.new_version is None:
            raise NeedsAttention("the run record lacks its versions; cannot finalize")
        with self.rt.journal.timed(record, "read"):
            old = self.rt.vault.read(record.path, record.from_version)
            new = self.rt.vault.read(record.path)
        if new.version != record.new_version or new.metadata.get("rotation_id") != rid:
            raise NeedsAttention(
                f"ScaiVault's current version is {new.version} (rotation_id "
                f"{new.metadata.get('rotation_id') or '-'}), not our version {record.new_version}: "
                "someone wrote the secret during grace; the old credential was NOT revoked"
            )
        ctx = self.minter.load_context(record, old)
        try:
            with self.rt.journal.timed(record, "verify"):
                self.minter.verify(rotator, ctx, new.data)
        except CredentialRejected as exc:
            raise NeedsAttention(
                f"the stored new credential no longer verifies ({reason_of(exc)}); "
                "the old one was NOT revoked"
            ) from None
        self.rt.guard.check(rid, "finalize")
        with self.rt.journal.timed(record, "finalize"):
            rotator.finalize(ctx, old.data, new.data)
        done = self.rt.store.transition(record.rotation_id, "done", owner=owner, step="done")
        self.rt.journal.outcome(rotator.name, "done")
        self.rt.log.info(
            "rotation_done",
            rotation_id=done.rotation_id,
            path=done.path,
            rotator=rotator.name,
            new_version=done.new_version,
        )
        self.rt.journal.history(
            done,
            "rotation_finalized",
            state="done",
            outcome="done",
            from_version=done.from_version,
            new_version=done.new_version,
        )

    def _complete_due(self, rotation_id: str, lease: int | None) -> None:
        if lease is None:
            self.rt.due.remove(rotation_id)
        else:
            self.rt.due.complete(rotation_id, lease)
