"""A run record and its vocabulary: the run states, their named sets, the legal transitions.

A run record is one Redis hash per rotation (see :mod:`orchestrator.state.runs`); it holds the
rotation's state and facts about it, never a secret value. Its only sensitive fields are
``sealed`` (an updater's minted value, Fernet-encrypted, kept from before ``apply`` until the
new version is stored) and ``minted`` (the same for other strategies, so a resumed rotation
reuses its value): :class:`RunRecord` only says whether one is set. A rotator's notes
(:class:`rotators.Notes`) are fields ``note.<name>`` of the same hash, in clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final


class RunState(StrEnum):
    """The states of a run: what ``status --json`` reports (docs/architecture.md#states)."""

    QUEUED = "queued"
    MINTING = "minting"
    APPLYING = "applying"
    VERIFYING = "verifying"
    STORING = "storing"
    GRACE = "grace"
    FINALIZING = "finalizing"
    DONE = "done"
    FAILED = "failed"
    NEEDS_ATTENTION = "needs_attention"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"


S = RunState
#: States that hold their path: no other rotation may start on it (needs_attention too, so a
#: half-done rotation is resolved by a human before another begins).
ACTIVE: Final = frozenset(
    {S.QUEUED, S.MINTING, S.APPLYING, S.VERIFYING, S.STORING, S.GRACE, S.FINALIZING}
    | {S.NEEDS_ATTENTION}
)
#: States a rotation ends in; the path is free again.
TERMINAL: Final = frozenset({S.DONE, S.FAILED, S.CANCELLED, S.ROLLED_BACK, S.SKIPPED})
#: States a worker is driving: they carry a lease that the sweeper re-drives when it expires.
LEASED: Final = frozenset({S.QUEUED, S.MINTING, S.APPLYING, S.VERIFYING, S.STORING, S.FINALIZING})
#: States a run may be in before it stores its new version (``cancel`` may stop it there).
BEFORE_STORE: Final = frozenset({S.QUEUED, S.MINTING, S.APPLYING, S.VERIFYING})
#: States a rotation may enter grace from (``storing``, or one before it when a resume finds
#: its version already stored).
PRE_GRACE: Final = BEFORE_STORE | {S.STORING}
#: States of a stored rotation whose old credential is still valid too: grace, and finalizing
#: until the old one is revoked.
BOTH_VALID: Final = frozenset({S.GRACE, S.FINALIZING})
#: States whose new version is stored in ScaiVault (the rotation worked, so far).
STORED: Final = BOTH_VALID | {S.DONE}

#: Legal transitions: state -> states it may move to. A vault-only rotator's run goes from
#: ``queued`` straight to ``storing``: its mint and verify touch nothing outside the worker.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    S.QUEUED: frozenset(
        {S.MINTING, S.STORING, S.GRACE, S.FAILED, S.NEEDS_ATTENTION, S.CANCELLED, S.SKIPPED}
    ),
    S.MINTING: frozenset(
        {S.MINTING, S.APPLYING, S.VERIFYING, S.STORING, S.GRACE}
        | {S.FAILED, S.NEEDS_ATTENTION, S.CANCELLED}
    ),
    S.APPLYING: frozenset(
        {S.APPLYING, S.VERIFYING, S.MINTING, S.GRACE, S.FAILED, S.NEEDS_ATTENTION, S.CANCELLED}
    ),
    S.VERIFYING: frozenset(
        {S.VERIFYING, S.STORING, S.MINTING, S.GRACE, S.FAILED, S.NEEDS_ATTENTION, S.CANCELLED}
    ),
    S.STORING: frozenset(
        {S.STORING, S.APPLYING, S.VERIFYING, S.GRACE, S.MINTING, S.FAILED, S.NEEDS_ATTENTION}
    ),
    S.GRACE: frozenset({S.FINALIZING, S.ROLLED_BACK, S.NEEDS_ATTENTION, S.CANCELLED}),
    S.FINALIZING: frozenset({S.FINALIZING, S.DONE, S.GRACE, S.NEEDS_ATTENTION, S.FAILED}),
    S.NEEDS_ATTENTION: frozenset(
        (ACTIVE - {S.NEEDS_ATTENTION}) | {S.CANCELLED, S.ROLLED_BACK, S.FAILED, S.DONE}
    ),
    S.FAILED: frozenset({S.QUEUED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.SKIPPED: frozenset(),
}
del S


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RunRecord:
    """What the run store knows about one rotation. Holds no secret value.

    ``mint_attempts`` counts minted values the target rejected (``CredentialRejected``), not
    mints repeated after a crash or a transient error. ``grace_period`` is duration text
    (``48h``); ``finalize_after``, ``created_at``, ``updated_at`` and ``lease_until`` are ISO
    8601 UTC times (all but ``created_at`` on Redis's clock; ``finalize_after`` counted from the
    moment the new version was stored); ``finalize_requested`` says who asked to finalize
    before that (``finalize --now``); ``sealed`` says whether an encrypted new value is held
    (the blob itself never leaves the store's API), ``may_be_applied`` whether it is an
    updater's, which the target may already use. ``write_sent`` says the run has entered
    ``storing`` at least once: a write of its new value may have reached ScaiVault, or still
    may, so the run can no longer be cancelled. ``notes`` are the rotator's notes of this
    rotation. ``waiting`` says who still used the old credential when finalize last deferred
    (``3 sessions of app_a from 10.0.4.7``), ``waiting_since`` when the first deferral was
    and ``waiting_checks`` how many times finalize deferred. After a transient failure,
    ``next_attempt`` says when the run is tried again (dropped once a worker takes it) and
    ``attempts_max`` the workers' attempt limit; ``lease_worker`` names the worker process
    that holds the lease. ``restored_version`` is the version a rollback wrote back.
    ``slot_wait`` names the target whose concurrency budget the run waits for (None once it
    holds a slot, or when it never waited); ``max_concurrent`` is its batch's own cap below the
    target's budget (``rotate --prefix --concurrency``). ``target`` is the target the worker
    resolved for the run's rule when it claimed it (with the rotator's own, e.g. a database's
    ``host:port``), which on-call's CLI cannot work out without the plugins.
    """

    rotation_id: str
    path: str
    state: str
    step: str | None = None
    trigger: str = "schedule"
    rotator: str | None = None
    event_id: str | None = None
    actor: str | None = None
    reason: str | None = None
    from_version: int | None = None
    new_version: int | None = None
    grace_period: str | None = None
    finalize_after: str | None = None
    finalize_requested: str | None = None
    attempts: int = 0
    mint_attempts: int = 0
    last_error: str | None = None
    created_at: str = ""
    updated_at: str = ""
    lease_until: str | None = None
    lease_owner: str | None = None
    waiting: str | None = None
    waiting_since: str | None = None
    waiting_checks: int = 0
    next_attempt: str | None = None
    attempts_max: int | None = None
    lease_worker: str | None = None
    restored_version: int | None = None
    sealed: bool = False
    may_be_applied: bool = False
    write_sent: bool = False
    slot_wait: str | None = None
    max_concurrent: int | None = None
    target: str | None = None
    notes: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_active(self) -> bool:
        """True while the rotation holds its path."""
        return self.state in ACTIVE

    @property
    def is_terminal(self) -> bool:
        """True once the rotation has ended."""
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``status --json`` prints). Every field but ``notes`` is a
        scalar, so a shallow copy (``dataclasses.asdict`` deep-copies, at several times the
        cost)."""
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        out["notes"] = dict(self.notes)
        return out


_INT_FIELDS = frozenset(
    {"from_version", "new_version", "attempts", "mint_attempts", "waiting_checks"}
    | {"attempts_max", "restored_version", "max_concurrent"}
)
_FIELD_NAMES = tuple(f.name for f in fields(RunRecord))
_RECORD_FIELDS = frozenset(_FIELD_NAMES)
#: Fields derived in :func:`_record` from what the scripts store (``*_ms`` on Redis's clock).
_DERIVED = frozenset(
    {"sealed", "may_be_applied", "write_sent", "lease_until", "notes", "updated_at"}
    | {"waiting_since"}
)
#: The fields stored as they are.
_PLAIN_FIELDS = tuple(name for name in _FIELD_NAMES if name not in _DERIVED)
#: Hash fields the store manages itself; callers may not set them through ``**changes``.
RESERVED = frozenset(
    {"state", "sealed", "lease_until", "lease_owner", "rotation_id", "path", "finalize_after"}
    | {"notes", "updated_at", "waiting_since", "lease_worker", "may_be_applied", "write_sent"}
)
#: The hash field of note ``name`` is ``note.<name>``.
NOTE_PREFIX = "note."


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def from_hash(raw: Mapping[str, str]) -> RunRecord:
    values: dict[str, Any] = {}
    for name in _PLAIN_FIELDS:
        if name in raw and raw[name] != "":
            values[name] = int(raw[name]) if name in _INT_FIELDS else raw[name]
    lease_ms = raw.get("lease_until_ms")
    if lease_ms:
        values["lease_until"] = iso_ms(lease_ms)
    due_ms = raw.get("finalize_after_ms")
    if due_ms:
        values["finalize_after"] = iso_ms(due_ms)
    waiting_ms = raw.get("waiting_since_ms")
    if waiting_ms:
        values["waiting_since"] = iso_ms(waiting_ms)
    changed_ms = raw.get("updated_ms")
    values["updated_at"] = iso_ms(changed_ms) if changed_ms else raw.get("updated_at", "")
    values["sealed"] = bool(raw.get("sealed") or raw.get("minted"))
    values["may_be_applied"] = bool(raw.get("sealed"))
    values["write_sent"] = bool(raw.get("write_sent"))
    values["notes"] = {
        k.removeprefix(NOTE_PREFIX): v for k, v in raw.items() if k.startswith(NOTE_PREFIX)
    }
    return RunRecord(**values)


def iso_ms(value: str) -> str:
    """An epoch-milliseconds field as ISO 8601 UTC."""
    return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat(timespec="milliseconds")


def from_flat(flat: list[Any]) -> RunRecord:
    """A record from a script's ``HGETALL`` reply (a flat field/value list)."""
    return from_hash(decode(dict(zip(flat[::2], flat[1::2], strict=True))))


def flatten(changes: Mapping[str, Any]) -> list[str]:
    """``[field, value, ...]`` for the scripts; ``None`` becomes ``""`` (the script deletes it)."""
    out: list[str] = []
    for name, value in changes.items():
        if name == "sealed" and value is None:  # the one way to drop the sealed value
            out += ["sealed", "", "minted", ""]
            continue
        if name not in _RECORD_FIELDS or name in RESERVED:
            raise ValueError(f"not a settable run field: {name!r}")
        out += [name, "" if value is None else str(value)]
    return out
