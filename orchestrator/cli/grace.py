"""What on-call can do while a rotation is in grace: finalize it early, or roll it back.

Finalize early re-verifies the new credential here first (and refuses, with the rotator's
reason, if it does not work), then moves the rotation's due-queue entry to now so the next
beat-driven sweep hands it to a worker, which re-verifies again and revokes the old credential.

Rollback is offered during grace only (DESIGN I4). Before it writes anything it *holds* the
run in the store (:meth:`~orchestrator.state.runs.RunStore.hold`, atomic, like a worker's
lease), so a finalize queued just before cannot move it on and revoke the old credential
meanwhile. Then it
takes the due entry out of the queue, makes the target accept the old credential again where
the rotator changed it in place, writes the previous version's data back to ScaiVault as a new
version with ``options.cas``, revokes the new credential where the rotator can, and records
``rolled_back``. Whether the new credential was revoked is reported truthfully: an issuer that
cannot revoke it (Salesforce cannot un-rotate a promoted pair) leaves it valid, and on-call is
told so with a warning; the rollback itself still succeeded.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.cli.output import EXIT_USAGE
from orchestrator.cli.session import POLL_SECONDS, OnCall, rule_for
from orchestrator.engine.credential import ReadOnlyVault
from orchestrator.engine.notes import RunNotes
from orchestrator.errors import CommandError
from orchestrator.log import get_logger
from orchestrator.state import history
from orchestrator.state.due import DueQueue
from orchestrator.state.runs import RunRecord, now_iso
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import RotatorError
from rotators.versions import ENGINE_FIELDS, ROLLBACK_FIELDS, ROTATED_BY, parse_time

#: How long a rollback holds its run at most (a CLI killed mid-rollback lets go after this).
ROLLBACK_HOLD_SECONDS = 300.0


def _in_grace(oc: OnCall, path: str, action: str) -> RunRecord:
    """The rotation of ``path`` that is in grace, or an error saying why ``action`` can't run."""
    record = oc.store.last(path)
    if record is None:
        raise CommandError(
            f"no rotation of {path!r} is recorded, so there is nothing to {action}",
            hint="check the path's spelling; `scaivault-rotator status` lists rotations",
        )
    if record.state == "grace":
        return record
    if record.state in {"done", "finalizing"}:
        when = "is being finalized now" if record.state == "finalizing" else "was finalized"
        raise CommandError(
            f"{action} is no longer possible: rotation {record.rotation_id} {when} "
            f"({record.updated_at}), which revokes the old credential",
            hint=f"rotate again with `scaivault-rotator rotate {path}` if the new one is bad",
        )
    raise CommandError(
        f"rotation {record.rotation_id} of {path!r} is {record.state}, not in grace; "
        f"only a rotation in grace can {action}",
        hint=f"`scaivault-rotator status {path}` shows where it is",
    )


def _context(oc: OnCall, record: RunRecord, current: SecretVersion) -> tuple[Rotator, Any]:
    rule = rule_for(oc, record.path)
    rotator = oc.routing.rotator_for(rule)
    ctx = RotationContext(
        path=record.path,
        rotation_id=record.rotation_id,
        current=current,
        options=rule.options,
        log=get_logger("orchestrator.cli.grace", path=record.path, rotation_id=record.rotation_id),
        vault=ReadOnlyVault(oc.vault),
        notes=RunNotes(record),  # read-only: no worker holds the run here
    )
    return rotator, ctx


def _versions(oc: OnCall, record: RunRecord) -> tuple[SecretVersion, SecretVersion]:
    if record.from_version is None or record.new_version is None:
        raise CommandError(
            f"rotation {record.rotation_id} records no from/new version",
            hint="look at `history` and ScaiVault's versions; act by hand",
        )
    old = oc.vault.read(record.path, version=record.from_version)
    new = oc.vault.read(record.path, version=record.new_version)
    return old, new


def verify_new(oc: OnCall, record: RunRecord) -> None:
    """Refuse (exit 1) unless the stored new credential verifies at the target right now."""
    old, new = _versions(oc, record)
    rotator, ctx = _context(oc, record, old)
    try:
        rotator.verify(ctx, new.data)
    except RotatorError as exc:
        raise CommandError(
            f"refusing to finalize {record.path!r}: the new credential (version "
            f"{record.new_version}) does not verify: {exc.message}",
            hint="the old credential stays valid; fix the target or "
            f"`rollback {record.path}`, then try again",
        ) from None


def _refuse_if_held(record: RunRecord, action: str) -> None:
    until = record.lease_until and datetime.fromisoformat(record.lease_until)
    if record.lease_owner and until and until > datetime.now(UTC):
        raise CommandError(
            f"cannot {action}: rotation {record.rotation_id} is held by {record.lease_owner} "
            f"until {record.lease_until} (a rollback in progress)",
            hint=f"wait for it; `status {record.path}` shows the outcome",
        )


def _grace_over(oc: OnCall, record: RunRecord) -> bool:
    """Whether ``record``'s grace is over on Redis's clock (the one the workers go by)."""
    due = parse_time(record.finalize_after)
    seconds, micros = oc.redis.time()
    return due is None or due.timestamp() <= seconds + micros / 1e6


def finalize_now(
    oc: OnCall, path: str, *, early: bool, timeout: float, actor: str, reason: str | None
) -> RunRecord:
    """Finalize ``path``'s rotation in grace and wait for the worker's outcome."""
    record = _in_grace(oc, path, "finalize")
    _refuse_if_held(record, "finalize")
    if not early and not _grace_over(oc, record):
        raise CommandError(
            f"rotation {record.rotation_id} is in grace until {record.finalize_after}",
            hint=f"pass --now to finalize early (e.g. after a leak): finalize {path} --now",
            exit_code=EXIT_USAGE,
        )
    verify_new(oc, record)
    # The run itself records the request (the worker finalizes before finalize_after only then).
    oc.store.update(record.rotation_id, finalize_requested=f"{actor} at {now_iso()}")
    history.append(
        oc.redis, path, "finalize_requested", rotation_id=record.rotation_id, actor=actor,
        reason=reason, state=record.state, detail="early" if early else "overdue",
    )  # fmt: skip
    # Due now: the next sweep claims it (an entry lost with Redis data is simply re-added).
    DueQueue(oc.redis).schedule(record.rotation_id, int(time.time() * 1000), replace=True)
    return _await_finalize(oc, record, timeout)


def _await_finalize(oc: OnCall, record: RunRecord, timeout: float) -> RunRecord:
    deadline = time.monotonic() + timeout
    left_grace = False
    while time.monotonic() < deadline:
        current = oc.store.require(record.rotation_id)
        if current.state not in {"grace", "finalizing"}:
            return current  # done, or an end the caller reports (failed, needs_attention...)
        if current.state == "finalizing":
            left_grace = True
        elif left_grace or current.last_error != record.last_error:
            raise CommandError(
                f"the worker refused to finalize {record.path!r}: {current.last_error or '-'}",
                hint="the old credential stays valid; see `history` for details",
            )
        time.sleep(POLL_SECONDS)
    raise CommandError(
        f"rotation {record.rotation_id} was not finalized within {timeout:.0f}s",
        hint="are a worker and beat running? It is due now; `status` shows progress",
    )


def _rollback_metadata(old: SecretVersion, record: RunRecord) -> dict[str, Any]:
    # A rolled-back version carries none of a rotation's bookkeeping (``reconcile`` would
    # otherwise schedule a finalize from ``finalize_after``).
    dropped = (*ENGINE_FIELDS, *ROLLBACK_FIELDS)
    metadata = {k: v for k, v in old.metadata.items() if k not in dropped}
    metadata.update(
        rotated_by=ROTATED_BY,
        rolled_back_rotation_id=record.rotation_id,
        rolled_back_from_version=record.new_version,
        restored_version=record.from_version,
    )
    return metadata


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the ``rolled_back`` record, what became of the new credential, and
    a warning when it is still valid at the target (revoke it by hand)."""

    record: RunRecord
    new_credential: str
    warning: str | None = None


def rollback(oc: OnCall, path: str, *, actor: str, reason: str | None) -> Rollback:
    """Restore ``path`` to the data it had before its rotation in grace (see module doc)."""
    record = _in_grace(oc, path, "roll back")
    owner = f"rollback:{actor}:{uuid.uuid4().hex[:8]}"
    refused = oc.store.hold(record.rotation_id, owner, ROLLBACK_HOLD_SECONDS)
    if refused != "ok":
        _in_grace(oc, path, "roll back")  # it moved on (finalizing...): say so
        raise CommandError(
            f"cannot roll back: rotation {record.rotation_id} is {refused} right now",
            hint=f"another rollback is running; `status {path}` shows the outcome",
        )
    due = DueQueue(oc.redis)
    score = due.score(record.rotation_id)
    due.remove(record.rotation_id)  # nothing is claimed for finalize while we roll back
    try:
        restored = _restore(oc, record)
        return _record_rollback(oc, record, restored, owner, actor, reason)
    except BaseException:
        if oc.store.require(record.rotation_id).state == "grace":
            if score is not None:
                due.schedule(record.rotation_id, score, replace=True)
            oc.store.unhold(record.rotation_id, owner)
        raise


def _restore(oc: OnCall, record: RunRecord) -> tuple[int, str, str | None]:
    current = oc.vault.read(record.path)
    if current.version != record.new_version:
        raise CommandError(
            f"ScaiVault's current version of {record.path!r} is {current.version}, not the "
            f"rotation's {record.new_version}: someone wrote since, and a rollback would undo it",
            hint="look at the versions in ScaiVault and restore by hand if needed",
        )
    old, new = _versions(oc, record)
    rotator, ctx = _context(oc, record, new)
    if rotator.strategy == "updater":
        rotator.apply(ctx, old.data)
    if rotator.strategy != "vault-only":  # the target must accept the old credential again
        rotator.verify(ctx, old.data)
    version = oc.vault.write(
        record.path,
        old.data,
        cas=current.version,
        secret_type=old.secret_type,
        metadata=_rollback_metadata(old, record),
    )
    outcome, warning = _discard_new(rotator, ctx, new)
    return version, outcome, warning


def _discard_new(
    rotator: Rotator, ctx: RotationContext, new: SecretVersion
) -> tuple[str, str | None]:
    """What became of the new credential: ``(outcome, warning if it is still valid)``."""
    if rotator.strategy == "updater":
        return "the target was set back to the old credential; the new one was replaced", None
    if rotator.strategy == "vault-only":
        return "the new value lived only in ScaiVault", None
    still = f"the new credential (version {new.version}) is still valid at the target"
    if type(rotator).discard is Rotator.discard:
        return still, f"{still}: rotator {rotator.name} cannot revoke it; revoke it by hand"
    try:
        rotator.discard(ctx, new.data)
    except RotatorError as exc:
        return still, f"{still}: {exc.message}"
    except Exception as exc:  # a foreign error's text may hold a value: its type only
        return still, f"{still}: discard failed ({type(exc).__name__}); revoke it by hand"
    return "the rotator revoked the new credential", None


def _record_rollback(
    oc: OnCall,
    record: RunRecord,
    restored: tuple[int, str, str | None],
    owner: str,
    actor: str,
    reason: str | None,
) -> Rollback:
    version, outcome, warning = restored
    done = oc.store.transition(
        record.rotation_id, "rolled_back", expect={"grace"}, owner=owner, last_error=warning
    )
    history.append(
        oc.redis, record.path, "rotation_rolled_back", rotation_id=record.rotation_id,
        actor=actor, reason=reason, state="rolled_back", from_version=record.new_version,
        new_version=version,
        detail=f"restored version {record.from_version}'s data; {warning or outcome}",
    )  # fmt: skip
    return Rollback(done, outcome, warning)
