"""Rolling a rotation in grace back, on a worker: ScaiVault gets the previous data as a new version.

Rollback is offered during grace only (docs/architecture.md, invariant I4). On-call's CLI *holds*
the run first (an atomic hold: a finalize queued meanwhile cannot move it on and revoke the old
credential) and publishes ``scaivault.rollback``; a worker carries it out under that hold, so
on-call's machine needs neither the plugins, the seal key nor network access to the targets. The
worker takes the run's due entry out of the queue, makes the target accept the old credential again
where the rotator changed it in place, writes the previous version's data back with check-and-set (a
write whose answer is lost is settled, never guessed), revokes the new credential where the rotator
can, and records ``rolled_back``. Whether the new credential was revoked is recorded truthfully: a
rotator that cannot revoke it (Salesforce cannot un-rotate a promoted pair) leaves it valid, and the
run's ``last_error`` says so.

A rollback that touches the target takes a slot of its target's budget like any rotation;
while every slot is taken the run stays held in grace with ``slot_wait`` set (so ``status``
says it waits for a slot; taking the slot clears it) and the task tries again after a short
countdown.

If anything fails before the write, nothing changed: the run stays in grace, due again at its
own finalize time, with the reason in ``last_error``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NoReturn

from orchestrator.engine.budget import WAIT_DELAY, Budgets, Slot
from orchestrator.engine.credential import Minter
from orchestrator.engine.failures import Failures
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.writeback import Write, WriteBack
from orchestrator.errors import OrchestratorError, RetryLater, reason_of
from orchestrator.state.records import RunRecord, RunState
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import RotatorError
from rotators.versions import ENGINE_FIELDS, ROLLBACK_FIELDS, ROTATED_BY, parse_time

#: How long a rollback holds its run at most (a CLI or worker that dies lets go after this).
HOLD_SECONDS = 300.0


@dataclass(frozen=True)
class RollbackRequest:
    """One ``scaivault.rollback``: the run, the hold on-call took, who and why."""

    rotation_id: str
    hold: str
    actor: str | None = None
    reason: str | None = None

    def to_kwargs(self) -> dict[str, Any]:
        return {
            "rotation_id": self.rotation_id,
            "hold": self.hold,
            "actor": self.actor,
            "reason": self.reason,
        }


class Refused(OrchestratorError):
    """A rollback that cannot be carried out; the run stays in grace."""


@dataclass(frozen=True)
class _Restored:
    version: int
    outcome: str
    warning: str | None


class Rollback:
    """Carries out rollbacks on a worker."""

    def __init__(
        self, runtime: Runtime, minter: Minter, failures: Failures, budgets: Budgets
    ) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures
        self.budgets = budgets
        self.writeback = WriteBack(runtime)

    def roll_back(self, request: RollbackRequest, owner: str) -> RunRecord | None:
        """Roll ``request``'s run back under on-call's hold; returns the run afterwards."""
        record = self.rt.runs.get(request.rotation_id)
        if record is None or record.state != RunState.GRACE:
            return record  # it moved on meanwhile: on-call's CLI says so
        held = self.rt.runs.hold(record.rotation_id, request.hold, HOLD_SECONDS)
        if held != "ok":
            self.rt.log.warning("rollback_not_held", rotation_id=record.rotation_id, why=held)
            return self.rt.runs.get(record.rotation_id)
        slot = self._slot(record)
        if slot is None:
            self._wait_for_slot(record)
        score = self.rt.due.score(record.rotation_id)
        self.rt.due.remove(record.rotation_id)  # nothing is claimed for finalize meanwhile
        try:
            restored = self._restore(record)
        except Exception as exc:  # reason_of names a foreign error by its type only
            return self._refuse(record, request, score, reason_of(exc, "rollback"))
        finally:
            if slot is not None:
                slot.release()
        return self._record(record, request, restored)

    def _slot(self, record: RunRecord) -> Slot | None:
        """A slot of the run's target for the rollback (held as long as the hold lasts at most;
        none needed where the routing file no longer routes the path: it is refused anyway)."""
        rule = self.rt.routing.match(record.path)
        if rule is None or rule.rotator != record.rotator:
            return Slot()
        rotator = self.rt.routing.rotator_for(rule)
        # The target's own budget: a batch's --concurrency paces its rotations, not on-call's
        # undo of one of them.
        return self.budgets.take(record, rule.target, rotator, phase="rollback",
                                 lease=HOLD_SECONDS, note_wait=True)  # fmt: skip

    def _wait_for_slot(self, record: RunRecord) -> NoReturn:
        """Every slot of the target is taken (the run's ``slot_wait`` says so now): try again
        in a moment (the task's short countdown; the hold, renewed then, keeps the run in
        grace). Logged once, when the wait begins."""
        rule = self.rt.routing.match(record.path)
        target = rule.target.target if rule else ""
        if record.slot_wait != target:
            self.rt.log.info("slot_wait", rotation_id=record.rotation_id, path=record.path,
                             target=target, state=record.state)  # fmt: skip
        raise RetryLater(f"waits for a slot of target {target}", rotation_id=record.rotation_id,
                         countdown=random.uniform(*WAIT_DELAY))  # fmt: skip

    def _restore(self, record: RunRecord) -> _Restored:
        if record.from_version is None or record.new_version is None:
            raise Refused("the run records no from/new version; restore by hand")
        rotator = self._rotator(record)
        current = self.rt.vault.read(record.path)
        if current.version != record.new_version:
            raise Refused(
                f"ScaiVault's current version is {current.version}, not the rotation's "
                f"{record.new_version}: someone wrote since, and a rollback would undo it"
            )
        old = self.rt.vault.read(record.path, record.from_version)
        ctx = self.minter.load_context(record, current)
        if rotator.capabilities.in_place:
            rotator.apply(ctx, old.data)
        if rotator.capabilities.touches_target:  # the target must accept the old one again
            rotator.verify(ctx, old.data)
        write = Write(current, old.data, _metadata(old, record), mark="rolled_back_rotation_id")
        written = self.writeback.write(write, rotation_id=record.rotation_id)
        if written is None:
            raise Refused("someone wrote the secret during the rollback; nothing was restored")
        outcome, warning = _discard_new(rotator, ctx, current)
        return _Restored(written.version, outcome, warning)

    def _rotator(self, record: RunRecord) -> Rotator:
        rule = self.rt.routing.match(record.path)
        if rule is None or rule.rotator != record.rotator:
            raise Refused(f"the routing file no longer routes this path to {record.rotator!r}")
        return self.rt.routing.rotator_for(rule)

    def _refuse(
        self, record: RunRecord, request: RollbackRequest, score: int | None, reason: str
    ) -> RunRecord:
        """Nothing was written: back to grace as it was, with the reason, and let go."""
        due = score if score is not None else _due_ms(record)
        if due is not None:
            self.rt.due.schedule(record.rotation_id, due, replace=True)
        message = f"rollback refused: {reason}"
        back = self.rt.runs.update(record, owner=request.hold, last_error=message)
        self.rt.runs.unhold(record.rotation_id, request.hold)
        self.rt.log.warning("rollback_refused", rotation_id=record.rotation_id, path=record.path,
                            reason=message)  # fmt: skip
        self.rt.runs.history(back, "rollback_refused", actor=request.actor, detail=message)
        return self.rt.runs.require(record.rotation_id)

    def _record(
        self, record: RunRecord, request: RollbackRequest, restored: _Restored
    ) -> RunRecord:
        done = self.rt.runs.transition(
            record,
            RunState.ROLLED_BACK,
            expect={RunState.GRACE},
            owner=request.hold,
            step="rollback",
            last_error=restored.warning,
            restored_version=restored.version,
        )
        self.rt.runs.history(
            done, "rotation_rolled_back", actor=request.actor, reason=request.reason,
            state=RunState.ROLLED_BACK, from_version=record.new_version,
            new_version=restored.version,
            detail=f"restored version {record.from_version}'s data; "
            f"{restored.warning or restored.outcome}",
        )  # fmt: skip
        self.rt.log.info("rotation_rolled_back", rotation_id=done.rotation_id, path=done.path,
                         restored=record.from_version, new_version=restored.version)  # fmt: skip
        if restored.warning:  # the new credential still works at the target: on-call's to revoke
            self.failures.stray(done, restored.warning, version=record.new_version)
        return done


def _metadata(old: SecretVersion, record: RunRecord) -> dict[str, Any]:
    """The previous version's own metadata, none of a rotation's bookkeeping (``reconcile``
    would otherwise schedule a finalize from ``finalize_after``), and what was rolled back."""
    dropped = (*ENGINE_FIELDS, *ROLLBACK_FIELDS)
    metadata = {k: v for k, v in old.metadata.items() if k not in dropped}
    metadata.update(
        rotated_by=ROTATED_BY,
        rolled_back_rotation_id=record.rotation_id,
        rolled_back_from_version=record.new_version,
        restored_version=record.from_version,
    )
    return metadata


def _discard_new(
    rotator: Rotator, ctx: RotationContext, new: SecretVersion
) -> tuple[str, str | None]:
    """What became of the new credential: ``(outcome, warning if it is still valid)``."""
    if rotator.capabilities.in_place:
        return "the target was set back to the old credential; the new one was replaced", None
    if not rotator.capabilities.touches_target:
        return "the new value lived only in ScaiVault", None
    still = f"the new credential (version {new.version}) is still valid at the target"
    if not rotator.can_discard:
        return still, f"{still}: rotator {rotator.name} cannot revoke it; revoke it by hand"
    try:
        rotator.discard(ctx, new.data)
    except RotatorError as exc:
        return still, f"{still}: {exc.message}"
    except Exception as exc:  # a foreign error's text may hold a value: its type only
        return still, f"{still}: discard failed ({type(exc).__name__}); revoke it by hand"
    return "the rotator revoked the new credential", None


def _due_ms(record: RunRecord) -> int | None:
    due = parse_time(record.finalize_after)
    return None if due is None else int(due.timestamp() * 1000)
