"""What on-call may do with a path's last rotation, and what every message suggests next.

One table for both: :func:`refusal` is what each changing command checks before it acts, and
:func:`next_steps` only ever suggests commands :func:`refusal` allows in that state, so following
a ``next:`` hint never ends in "not possible" (tests/unit/cli/test_situation.py walks every state).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.state.records import (
    ACTIVE,
    BEFORE_STORE,
    LEASED,
    TERMINAL,
    RunRecord,
    RunState,
)
from orchestrator.state.strays import Stray
from rotators.versions import parse_time

S = RunState
#: States ``retry`` gives a fresh set of attempts.
RETRYABLE = frozenset({S.FAILED, S.NEEDS_ATTENTION})
#: States ``cancel`` may stop (when nothing was stored and no value may be applied).
CANCELLABLE = BEFORE_STORE | {S.NEEDS_ATTENTION}
#: The commands that change a rotation, as :func:`refusal` knows them.
COMMANDS = ("rotate", "retry", "cancel", "finalize", "finalize --now", "rollback")


@dataclass(frozen=True)
class Situation:
    """A path's last run and what the command line knows around it.

    ``routed``: a routing rule matches the path. ``now``: Redis's clock (grace ends by it).
    ``strays``: credentials of the path left valid at the target (revoke, then acknowledge).
    """

    record: RunRecord | None
    routed: bool = True
    now: datetime | None = None
    strays: tuple[Stray, ...] = ()

    @property
    def state(self) -> str | None:
        return self.record.state if self.record else None

    @property
    def held(self) -> str | None:
        """Who holds a run in grace (a rollback in progress), or None."""
        record = self.record
        if record is None or record.state != S.GRACE or not record.lease_owner:
            return None
        until = parse_time(record.lease_until)
        return record.lease_owner if until is not None and until > self._now() else None

    @property
    def grace_over(self) -> bool:
        due = parse_time(self.record.finalize_after) if self.record else None
        return due is None or due <= self._now()

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)


def refusal(situation: Situation, command: str) -> str | None:
    """Why ``command`` cannot run now (a sentence), or None when it may."""
    record, state = situation.record, situation.state
    if command == "rotate":
        if not situation.routed:
            return "no routing rule matches the path"
        if record is not None and state in ACTIVE:
            return f"rotation {record.rotation_id} is {state} and holds the path"
        return None
    if record is None:
        return "no rotation of the path is recorded"
    rid = record.rotation_id
    if command == "retry":
        if state in RETRYABLE:
            return None
        return (
            f"nothing to retry: rotation {rid} is {state} (retry takes failed or needs_attention)"
        )
    if command == "cancel":
        return _cancel_refusal(record)
    if command in {"finalize", "finalize --now", "rollback"}:
        return _grace_refusal(situation, command)
    raise ValueError(f"unknown command {command!r}")


def _cancel_refusal(record: RunRecord) -> str | None:
    if record.state in TERMINAL:
        return (
            f"no active rotation to cancel: the last one, {record.rotation_id}, is {record.state}"
        )
    if record.state not in CANCELLABLE or record.new_version is not None:
        stored = "is already stored" if record.new_version is not None else "may be stored"
        return (
            f"rotation {record.rotation_id} is {record.state}: its new version {stored}, so "
            "cancelling would leave two live credentials"
        )
    if record.may_be_applied:
        return (
            f"rotation {record.rotation_id} is {record.state} and its new value may already "
            "be in use at the target"
        )
    if record.write_sent:
        return (
            f"rotation {record.rotation_id} is {record.state} and has begun writing its new "
            "version to ScaiVault (a write may still land), so cancelling could revoke what "
            "ScaiVault serves"
        )
    return None


def _grace_refusal(situation: Situation, command: str) -> str | None:
    record = situation.record
    assert record is not None
    rid, state = record.rotation_id, record.state
    if command == "finalize --now" and state == S.NEEDS_ATTENTION and record.waiting:
        return None  # held after waiting for the old credential's consumers
    if state != S.GRACE:
        if state in {S.DONE, S.FINALIZING}:
            when = "is being finalized now" if state == S.FINALIZING else "was finalized"
            return (
                f"no longer possible: rotation {rid} {when} ({record.updated_at}), which "
                "revokes the old credential"
            )
        return f"rotation {rid} is {state}, not in grace"
    if situation.held:
        return f"rotation {rid} is held by {situation.held} (a rollback in progress)"
    if command == "finalize" and not situation.grace_over:
        return f"rotation {rid} is in grace until {record.finalize_after}"
    return None


def next_steps(situation: Situation, path: str) -> list[str]:
    """What on-call can do next, most useful first; each names a command allowed now."""
    steps = [
        f"revoke the credential rotation {stray.rotation_id} left valid at the target, then "
        f"`acknowledge {path}`"
        for stray in situation.strays
    ]
    return steps + _run_steps(situation, path)


def _run_steps(situation: Situation, path: str) -> list[str]:
    record, state = situation.record, situation.state
    steps: list[str] = []

    def offer(command: str, text: str) -> None:
        if refusal(situation, command) is None:
            steps.append(text)

    if record is None or state not in ACTIVE | RETRYABLE:
        offer("rotate", f"`rotate {path}` starts a new rotation")
        if not situation.routed:
            steps.append(
                f"add a [[rules]] entry that matches {path} to the routing file "
                "(`check-config` checks it)"
            )
        return steps
    if state in RETRYABLE:
        offer("retry", f"fix the cause, then `retry {path}`")
        offer("cancel", f"`cancel {path}` gives up this rotation")
        offer("finalize --now", f"`finalize {path} --now` revokes the old credential anyway")
        return steps
    if state == S.GRACE:
        offer("finalize", f"`finalize {path}` revokes the old credential now")
        if not steps:
            offer("finalize --now", f"`finalize {path} --now` ends grace early")
        offer("rollback", f"`rollback {path}` undoes the rotation")
    else:
        offer("cancel", f"`cancel {path}` stops it")
    if not steps or situation.held:
        steps.insert(0, f"`status {path}` shows its progress; it goes on by itself")
    return steps


def hint(situation: Situation, path: str) -> str:
    """:func:`next_steps` as one ``next:`` line."""
    return "; or ".join(next_steps(situation, path))


def progress(situation: Situation) -> list[str]:
    """What is happening to the run now, in plain sentences (``status PATH`` shows them)."""
    strays = [
        f"left valid at the target since {stray.since}: {stray.detail}"
        for stray in situation.strays
    ]
    return _run_progress(situation) + strays


def _run_progress(situation: Situation) -> list[str]:
    record = situation.record
    if record is None:
        return []
    state = record.state
    if state in LEASED:
        return _driven(record, situation._now())
    if state == S.GRACE:
        lines = [_in_grace(record, situation)]
        if record.slot_wait:  # its finalize waits for a slot of its target
            lines += _driven(record, situation._now())
        return lines
    if state == S.DONE:
        return [
            f"done: the old credential (version {record.from_version}) was revoked; version "
            f"{record.new_version} is current"
        ]
    if state == S.ROLLED_BACK:
        restored = (
            f"version {record.restored_version}" if record.restored_version else "a new version"
        )
        line = (
            f"rolled back: ScaiVault holds {restored} with the data of version "
            f"{record.from_version}; the old credential works again"
        )
        return [line] + ([f"warning: {record.last_error}"] if record.last_error else [])
    if state in {S.FAILED, S.NEEDS_ATTENTION, S.SKIPPED, S.CANCELLED}:
        return [f"{state}: {record.last_error or 'see `history` for why'}"]
    return []


def _driven(record: RunRecord, now: datetime) -> list[str]:
    """A run a worker drives: waiting for a target slot, retrying or failing, and who holds it."""
    if record.slot_wait:
        return [
            f"waiting for a slot of target {record.slot_wait}: its concurrency budget "
            "(max_concurrent) is in use; it goes on when a slot frees, holding no worker meanwhile"
        ]
    lines = []
    attempt = f"attempt {record.attempts}" + (
        f" of {record.attempts_max}" if record.attempts_max else ""
    )
    retry_at = parse_time(record.next_attempt)
    if retry_at is not None and retry_at > now:
        wait = int((retry_at - now).total_seconds())
        lines.append(
            f"retrying: {attempt} failed ({record.last_error or '-'}); the next attempt is at "
            f"{retry_at.isoformat(timespec='seconds')} (in {wait}s)"
        )
    elif record.last_error:
        doing = "the write to ScaiVault" if record.state == S.STORING else f"step {record.step}"
        lines.append(f"failing: {doing} is failing and being retried ({attempt}): "
                     f"{record.last_error}")  # fmt: skip
    until = parse_time(record.lease_until)
    holder = record.lease_worker or record.lease_owner
    if until is not None and until > now and holder:
        lines.append(f"held by worker {holder} until {until.isoformat(timespec='seconds')}")
    elif until is not None:
        lines.append(
            "no worker holds it now: the sweep hands it to a worker again (are workers and "
            "beat running?)"
        )
    return lines


def driving(record: RunRecord, now: datetime) -> str | None:
    """One short cell for ``status``'s overview: retrying (attempt N of M, the next attempt's
    time) or failing, and the worker holding the run; ``None`` for a run no worker drives."""
    if record.state not in LEASED:
        return None
    parts = []
    attempt = f" {record.attempts}/{record.attempts_max}" if record.attempts_max else ""
    retry_at = parse_time(record.next_attempt)
    if retry_at is not None and retry_at > now:
        parts.append(f"retrying{attempt}, next {retry_at.strftime('%H:%M:%SZ')}")
    elif record.last_error:
        parts.append(f"failing{attempt}")
    until = parse_time(record.lease_until)
    holder = record.lease_worker or record.lease_owner
    if until is not None and until > now and holder:
        parts.append(f"worker {holder}")
    elif until is not None:
        parts.append("no worker holds it")
    return ", ".join(parts) or None


def _in_grace(record: RunRecord, situation: Situation) -> str:
    if situation.held:
        return f"held by {situation.held}: a rollback is in progress"
    if record.waiting:
        checks = f"{record.waiting_checks} check{'s' if record.waiting_checks != 1 else ''}"
        return (
            f"waiting: finalize waits until the old credential is unused: {record.waiting} "
            f"(waiting since {record.waiting_since}, {checks})"
        )
    if situation.grace_over:
        return "grace is over: the next sweep finalizes it (re-verify new, revoke old)"
    return (
        f"in grace: the old and the new credential both work until {record.finalize_after}, "
        "then finalize revokes the old one"
    )


def credentials(record: RunRecord, new_fate: str | None = None) -> list[str]:
    """What became of each credential of ``record``'s rotation, one plain statement each (what
    ``finalize``, ``rollback``, ``cancel`` and ``retry`` end with). ``new_fate``: what the
    worker recorded about the new credential of a rollback, or what became of a cancelled
    run's unused one (:func:`orchestrator.cli.session.cancelled_fate`)."""
    old = f"old credential (version {record.from_version})"
    new = f"new credential (version {record.new_version})"
    state = record.state
    if state == S.DONE:
        return [f"{old}: revoked", f"{new}: current in ScaiVault"]
    if state == S.ROLLED_BACK:
        restored = f"version {record.restored_version}" if record.restored_version else "again"
        fate = new_fate or "withdrawn"
        if record.last_error:
            fate = f"STILL VALID at the target: revoke it by hand, then acknowledge it ({fate})"
        return [f"{old}: works again; ScaiVault holds its data as {restored}", f"{new}: {fate}"]
    if state in {S.GRACE, S.FINALIZING}:
        return [
            f"{old}: still valid until finalize ({record.finalize_after})",
            f"{new}: current in ScaiVault",
        ]
    if record.new_version is not None:
        return [f"{old}: still valid (not revoked)", f"{new}: stored in ScaiVault"]
    lines = [f"{old}: unchanged, still current in ScaiVault"]
    if state == S.CANCELLED:
        lines.append(f"new credential: {new_fate or 'none stored'}")
    else:
        lines.append("new credential: none stored yet")
    return lines
