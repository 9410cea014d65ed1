"""Finalizing rotations whose grace is over: re-verify the new credential, revoke the old one.

Finalize runs only once grace is over on Redis's clock (or on-call asked for it early: the run
record's ``finalize_requested``), checks that ScaiVault's current version is still ours,
re-verifies it, waits while the old credential is still in use where the rotator can tell
(:mod:`orchestrator.engine.finalize_wait`), then revokes the old one (``rotator.finalize``) and
marks the run ``done``. A run
held by a rollback is never moved on. After the store, a failure is never just "failed": it
needs attention, and the old credential stays valid. The due-queue entry is removed only while
the sweeper's claim on it still matches.
"""

from __future__ import annotations

from orchestrator.engine.credential import Minter
from orchestrator.engine.failures import Failures
from orchestrator.engine.finalize_wait import FinalizeWait
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.steps import StepRunner
from orchestrator.errors import FinalizeTooEarly, IllegalTransition, NeedsAttention, reason_of
from orchestrator.state.records import TERMINAL, RunRecord, RunState
from rotators.contract import Rotator
from rotators.errors import CredentialRejected, PermanentError, RotatorError
from rotators.versions import parse_time


class Finalizer:
    """Finalizes rotations in grace once due."""

    def __init__(
        self, runtime: Runtime, minter: Minter, failures: Failures, steps: StepRunner
    ) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures
        self.steps = steps
        self.wait = FinalizeWait(runtime)

    def finalize(
        self,
        rotation_id: str,
        owner: str,
        lease: int | None = None,
        *,
        record: RunRecord | None = None,
    ) -> RunRecord | None:
        """Finalize a rotation whose grace period is over: re-verify new, revoke old, ``done``.

        ``lease`` is the due-queue claim the sweeper gave this task; the entry is removed only
        while it still matches. Without one (on-call, re-drive) the entry is removed when done.
        ``record``: the run as the caller just read it (else it is read here).
        """
        record = record or self.rt.runs.get(rotation_id)
        if record is None or record.state in TERMINAL or record.state == "needs_attention":
            self._complete_due(rotation_id, lease)
            return record
        if record.state == "grace":
            try:
                record = self.rt.runs.begin_finalize(record)
            except FinalizeTooEarly as exc:  # the due entry stays: claimed again after its lease
                self.rt.log.warning(
                    "finalize_refused", rotation_id=rotation_id, path=record.path, reason=str(exc)
                )
                return record
            except IllegalTransition:
                return self.rt.runs.get(rotation_id)
        if record.state != "finalizing":
            return record
        leased = self.rt.runs.acquire(rotation_id, owner, self.rt.lease_seconds)
        if leased is None:
            return self.rt.runs.get(rotation_id)
        return self.finalize_leased(leased, owner, lease)

    def finalize_leased(self, record: RunRecord, owner: str, lease: int | None) -> RunRecord | None:
        """Finalize ``record`` whose lease ``owner`` holds (also a re-driven ``finalizing``)."""
        rid = record.rotation_id

        def give_up(exc: Exception) -> None:  # after the store, never just "failed"
            reason = reason_of(exc, "finalize")
            self.failures.fail(rid, "needs_attention", reason, owner, step="finalize")

        def steps(rotator: Rotator) -> None:
            self._finalize_steps(record, rotator, owner)

        ran = self.steps.run(record, owner, steps, give_up)
        after = self.rt.runs.get(rid)
        if ran and (after is None or after.state != RunState.GRACE):  # grace: due again later
            self._complete_due(rid, lease)
        return after

    def _finalize_steps(self, record: RunRecord, rotator: Rotator, owner: str) -> None:
        rid = record.rotation_id
        if record.from_version is None or record.new_version is None:
            raise NeedsAttention("the run record lacks its versions; cannot finalize")
        with self.rt.runs.timed(record, "read"):
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
            with self.rt.runs.timed(record, "verify"):
                if record.finalize_requested:  # on-call asked early and waits: one try
                    rotator.verify(ctx, new.data)
                else:
                    self.minter.verify(rotator, ctx, new.data)
        except RotatorError as exc:
            if record.finalize_requested:  # grace goes on, loudly
                self._refuse_early(record, owner, exc)
                return
            if not isinstance(exc, CredentialRejected | PermanentError):
                raise
            raise NeedsAttention(
                f"the stored new credential no longer verifies ({reason_of(exc)}); "
                "the old one was NOT revoked"
            ) from None
        if not self.wait.may_revoke(record, rotator, ctx, old.data, owner):
            return  # back in grace until the old credential's consumers have moved off it
        self.rt.guard.check(rid, "finalize")
        with self.rt.runs.timed(record, "finalize"):
            rotator.finalize(ctx, old.data, new.data)
        done = self.rt.runs.transition(record, "done", owner=owner, step="done", waiting=None)
        self.rt.runs.outcome(rotator.name, "done")
        self.rt.log.info(
            "rotation_done",
            rotation_id=done.rotation_id,
            path=done.path,
            rotator=rotator.name,
            new_version=done.new_version,
        )
        self.rt.runs.history(
            done,
            "rotation_finalized",
            state="done",
            outcome="done",
            from_version=done.from_version,
            new_version=done.new_version,
        )

    def _refuse_early(self, record: RunRecord, owner: str, exc: Exception) -> None:
        """An early finalize (``finalize --now``) whose new credential does not verify: the run
        goes back to grace until its own finalize time, with the reason, and nothing is revoked."""
        reason = (
            f"the new credential (version {record.new_version}) does not verify "
            f"({reason_of(exc, 'verify')}); the old credential stays valid"
        )
        back = self.rt.runs.transition(
            record, "grace", owner=owner, step="grace", finalize_requested=None, last_error=reason
        )
        due = parse_time(back.finalize_after)
        if due is not None:
            self.rt.due.schedule(back.rotation_id, int(due.timestamp() * 1000), replace=True)
        self.rt.log.warning("finalize_refused", rotation_id=back.rotation_id, path=back.path,
                            reason=reason)  # fmt: skip
        self.rt.runs.history(back, "finalize_refused", state="grace", detail=reason)

    def _complete_due(self, rotation_id: str, lease: int | None) -> None:
        if lease is None:
            self.rt.due.remove(rotation_id)
        else:
            self.rt.due.complete(rotation_id, lease)
