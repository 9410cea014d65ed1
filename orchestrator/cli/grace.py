"""What on-call can do while a rotation is in grace: finalize it early, or roll it back.

Both are carried out by a worker, under the run's lease or hold: on-call's machine runs no
rotator code and needs neither the plugins, the seal key nor network access to the targets.

Finalize early records the request on the run (``finalize_requested``) and makes its due entry
due now; the next sweep hands it to a worker, which re-verifies the new credential and revokes
the old one, or refuses (the new credential does not verify) and leaves the run in grace with
the reason. Rollback holds the run first (atomic: a finalize queued meanwhile cannot move it on
and revoke the old credential), then publishes ``scaivault.rollback`` for a worker
(:mod:`orchestrator.engine.rollback`). Both commands follow the run until the worker is done.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from orchestrator.cli.output import EXIT_USAGE
from orchestrator.cli.session import POLL_SECONDS, OnCall, refuse_unless_allowed
from orchestrator.cli.situation import hint, refusal
from orchestrator.engine.rollback import HOLD_SECONDS, RollbackRequest
from orchestrator.errors import CommandError
from orchestrator.state import history, keys
from orchestrator.state.due import DueQueue
from orchestrator.state.messages import Task
from orchestrator.state.records import BOTH_VALID, RunRecord, RunState, now_iso


def finalize_now(
    oc: OnCall, path: str, *, early: bool, timeout: float, actor: str, reason: str | None
) -> RunRecord:
    """Finalize ``path``'s rotation in grace and wait for the worker's outcome.

    ``early`` (``--now``) also overrides a finalize that waits for the old credential's
    consumers, and takes a run held as ``needs_attention`` after that wait back to finalize."""
    requested = f"{actor} at {now_iso()}"
    command = "finalize --now" if early else "finalize"
    situation = oc.situation(path)
    if refusal(situation, command) is not None and refusal(situation, "finalize --now") is None:
        raise CommandError(  # a usage error: only --now may
            f"cannot finalize {path}: {refusal(situation, command)}",
            hint=hint(situation, path),
            exit_code=EXIT_USAGE,
        )
    record = refuse_unless_allowed(oc, path, command).record
    assert record is not None
    if record.state == RunState.NEEDS_ATTENTION:  # held after waiting for its consumers
        record = oc.store.transition(
            record, RunState.GRACE, expect={RunState.NEEDS_ATTENTION},
            finalize_requested=requested, last_error=None,
        )  # fmt: skip
    elif early:
        # The run itself records the request: a worker finalizes before finalize_after, or
        # while the old credential is in use, only then (and verifies the new credential
        # first, refusing if it does not work).
        record = oc.store.update(record, finalize_requested=requested)
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
        if current.state not in BOTH_VALID:
            return current  # done, or an end the caller reports (failed, needs_attention...)
        if current.state == "finalizing":
            left_grace = True
        elif current.waiting_checks > record.waiting_checks:
            raise CommandError(
                f"not finalized yet: the old credential is still in use ({current.waiting}); "
                "finalize waits for it and checks again by itself",
                hint=f"`finalize {record.path} --now` revokes it anyway; "
                f"`status {record.path}` shows who still uses it",
            )
        elif left_grace or current.last_error != record.last_error:
            raise CommandError(
                f"refusing to finalize {record.path!r}: {current.last_error or '-'}",
                hint="the old credential stays valid; fix the target or "
                f"`rollback {record.path}`, then try again",
            )
        time.sleep(POLL_SECONDS)
    raise CommandError(
        f"rotation {record.rotation_id} was not finalized within {timeout:.0f}s",
        hint="are a worker and beat running? It is due now; `status` shows progress",
    )


def forced_in_use(oc: OnCall, record: RunRecord) -> str | None:
    """Who still used the old credential when the worker revoked it anyway (``finalize
    --now`` past a wait for its consumers), as the worker recorded it; ``None`` otherwise."""
    for entry in reversed(history.read(oc.redis, record.path, limit=50)):
        if entry.get("event") == "finalize_in_use" and (
            entry.get("rotation_id") == record.rotation_id
        ):
            return entry.get("detail") or "the old credential was still in use"
    return None


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the ``rolled_back`` record, what became of the new credential, and
    a warning when it is still valid at the target (revoke it by hand)."""

    record: RunRecord
    new_credential: str
    warning: str | None = None


def rollback(
    oc: OnCall, path: str, *, actor: str, reason: str | None, timeout: float = 120.0
) -> Rollback:
    """Hold ``path``'s rotation in grace, hand its rollback to a worker and follow it."""
    record = refuse_unless_allowed(oc, path, "rollback").record
    assert record is not None
    owner = f"rollback:{actor}:{uuid.uuid4().hex[:8]}"
    refused = oc.store.hold(record.rotation_id, owner, HOLD_SECONDS)
    if refused != "ok":
        refuse_unless_allowed(oc, path, "rollback")  # it moved on (finalizing...): say so
        raise CommandError(
            f"cannot roll back: rotation {record.rotation_id} is {refused} right now",
            hint=f"another rollback is running; `status {path}` shows the outcome",
        )
    request = RollbackRequest(record.rotation_id, owner, actor=actor, reason=reason)
    try:
        oc.producer.send_task(
            Task.ROLLBACK, kwargs=request.to_kwargs(), queue=keys.TASK_QUEUE, retry=False
        )
    except Exception:
        oc.store.unhold(record.rotation_id, owner)
        raise
    return _await_rollback(oc, record, timeout)


def _await_rollback(oc: OnCall, record: RunRecord, timeout: float) -> Rollback:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = oc.store.require(record.rotation_id)
        if current.state == RunState.ROLLED_BACK:
            return Rollback(current, _outcome(oc, current), current.last_error)
        if current.state != RunState.GRACE:
            raise CommandError(
                f"rotation {record.rotation_id} became {current.state} instead of rolled_back: "
                f"{current.last_error or '-'}",
                hint=f"`history {record.path}` says what happened",
            )
        if current.last_error != record.last_error:
            raise CommandError(
                f"the worker refused to roll {record.path!r} back: {current.last_error}",
                hint="nothing was written; the rotation stays in grace",
            )
        time.sleep(POLL_SECONDS)
    raise CommandError(
        f"the rollback of {record.rotation_id} was not done within {timeout:.0f}s",
        hint="is a worker running? The run stays held for a few minutes; `status` shows it",
    )


def _outcome(oc: OnCall, record: RunRecord) -> str:
    """What became of the new credential, as the worker recorded it in the history."""
    for entry in reversed(history.read(oc.redis, record.path, limit=50)):
        if entry.get("event") == "rotation_rolled_back":
            return entry.get("detail", "").split("; ", 1)[-1]
    return "see `history` for what became of the new credential"
