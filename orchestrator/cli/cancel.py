"""``cancel``: stop a rotation that has stored nothing yet, wait until its worker let go, and
say what became of the new credential it may have minted."""

from __future__ import annotations

import time

from orchestrator.cli.session import POLL_SECONDS, OnCall, refuse_unless_allowed
from orchestrator.cli.situation import CANCELLABLE
from orchestrator.errors import CommandError
from orchestrator.state import history
from orchestrator.state.records import RunRecord
from orchestrator.state.strays import Strays
from rotators.versions import parse_time


def cancel(oc: OnCall, path: str, actor: str, reason: str | None) -> tuple[RunRecord, bool]:
    """Stop an active rotation that has stored nothing yet (the engine checks before each
    step). Returns the cancelled run, and whether a worker held it then (that worker records
    ``rotation_stopped`` when it lets go, after dropping what it minted)."""
    situation = refuse_unless_allowed(oc, path, "cancel")
    record = situation.record
    assert record is not None
    until = parse_time(record.lease_until)
    driven = until is not None and until > situation._now()
    if _stored(oc, record):
        raise CommandError(
            f"cannot cancel {path}: rotation {record.rotation_id} already stored its new "
            "version in ScaiVault, so cancelling would leave two live credentials",
            hint=f"fix the cause, then `retry {path}`",
        )
    done = oc.store.transition(
        record.rotation_id,
        "cancelled",
        expect=CANCELLABLE,
        refuse_if_sealed=True,
        last_error=f"cancelled by {actor}" + (f": {reason}" if reason else ""),
    )
    history.append(
        oc.redis, path, "rotation_cancelled", rotation_id=done.rotation_id, actor=actor,
        reason=reason, state="cancelled", detail=f"was {record.state}",
    )  # fmt: skip
    return done, driven


def await_dropped(oc: OnCall, record: RunRecord, timeout: float, driven: bool) -> RunRecord:
    """After a cancel: wait until the worker dropped the value it minted (and revoked it where
    the rotator can) — at its next step — and, when one held the run (``driven``), until it
    let go; a run nobody drove is returned as it is."""
    deadline = time.monotonic() + timeout
    current = oc.store.require(record.rotation_id)
    while current.sealed or (driven and not _events(oc, record, {"rotation_stopped"})):
        if time.monotonic() >= deadline:
            raise CommandError(
                f"rotation {record.rotation_id} is cancelled, but its worker has not dropped "
                f"its new value within {timeout:.0f}s",
                hint=f"it does at its next step; `status {record.path}` and `history "
                f"{record.path}` show when",
            )
        time.sleep(POLL_SECONDS)
        current = oc.store.require(record.rotation_id)
    return current


def cancelled_fate(oc: OnCall, record: RunRecord, held: bool, waited: bool) -> str:
    """What became of the unused new credential of a cancelled run: ``held`` (a value was
    kept when cancelled), ``waited`` (its worker has let go since, :func:`await_dropped`)."""
    path = record.path
    if not waited:
        return (
            "none stored; one the worker minted is withdrawn at its next step (`status "
            f"{path}` shows the outcome: a credential it cannot revoke is listed as left_valid)"
        )
    stray = any(s.rotation_id == record.rotation_id for s in Strays(oc.redis).of(path))
    if stray or _events(oc, record, {"credential_left_valid"}):
        return f"STILL VALID at the target: revoke it by hand, then `acknowledge {path}`"
    if _events(oc, record, {"credential_withdrawn"}):
        return "withdrawn (revoked at the target; none stored)"
    return "none stored" if held else "none minted"


def _events(oc: OnCall, record: RunRecord, events: set[str]) -> bool:
    """Whether ``record``'s rotation has one of ``events`` in its path's recent history."""
    return any(
        entry.get("event") in events and entry.get("rotation_id") == record.rotation_id
        for entry in history.read(oc.redis, record.path, limit=50)
    )


def _stored(oc: OnCall, record: RunRecord) -> bool:
    """Whether ``record`` stored its new version already: its record says so, or (a run that
    needs attention may not know) ScaiVault's current version carries its id."""
    if record.new_version is not None:
        return True
    if record.state != "needs_attention":
        return False
    return oc.vault.read(record.path).metadata.get("rotation_id") == record.rotation_id
