"""The run store: run records in Redis (:mod:`~orchestrator.state.records`), changed by checks.

Every state change is an atomic check-and-set in a Lua script (``lua/run_*.lua``): it refuses a
transition that :data:`~orchestrator.state.records.TRANSITIONS` does not allow, one from a
worker whose lease was taken over, and an active state on a path another rotation holds. The
same scripts keep the side indexes in step: the path's active claim (one rotation per path),
the lease index the sweeper re-drives from, and the ``status`` index of every run by last
update. Their clock is Redis's.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from orchestrator.errors import (
    IllegalTransition,
    LeaseLost,
    PathBusy,
    RunNotFound,
)
from orchestrator.log import get_logger
from orchestrator.state import keys, scripts
from orchestrator.state.records import (
    LEASED,
    NOTE_PREFIX,
    RESERVED,
    TRANSITIONS,
    RunRecord,
    RunState,
    decode,
    flatten,
    from_flat,
    from_hash,
    now_iso,
)
from orchestrator.state.transition import Change, Sealed, refusal
from rotators.contract import check_note
from rotators.versions import parse_time

_log = get_logger(__name__)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RunStore:
    """Run records in Redis. Every write is atomic and checked; reads never return secrets.

    A worker uses its :class:`~orchestrator.state.recorder.Recorder`, which also sends the run's
    history and metrics in the same round trips.
    """

    def __init__(self, client: redis.Redis, worker: str = "") -> None:
        self.client = client
        #: This process's name for the runs it leases (``lease_worker``; '' = unnamed).
        self.worker = worker
        self._create = scripts.register(client, "run_create")
        self._transition = scripts.register(client, "run_transition")
        self._lease = scripts.register(client, "run_lease")
        self._claim_expired = scripts.register(client, "lease_claim_expired")
        self._hold = scripts.register(client, "run_hold")
        self._release = scripts.register(client, "claim_release_stale")

    # --- reads -------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Redis's clock: the one clock every worker judges due times by."""
        seconds, micros = self.client.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)

    def get(self, rotation_id: str) -> RunRecord | None:
        """The run record of ``rotation_id``, or ``None``."""
        raw = decode(self.client.hgetall(keys.run(rotation_id)))
        return from_hash(raw) if raw else None

    def require(self, rotation_id: str) -> RunRecord:
        """Like :meth:`get`, but raise :class:`RunNotFound` when there is no such run."""
        record = self.get(rotation_id)
        if record is None:
            raise RunNotFound(f"no rotation {rotation_id!r}", rotation_id=rotation_id)
        return record

    def active(self, path: str) -> RunRecord | None:
        """The rotation holding ``path`` (an active state), or ``None``."""
        rotation_id = self.client.get(keys.active(path))
        record = self.get(_s(rotation_id)) if rotation_id else None
        return record if record is not None and record.is_active else None

    def lookup(self, rotation_id: str, path: str) -> tuple[RunRecord | None, RunRecord | None]:
        """``(get(rotation_id), active(path))`` in one round trip (two when another run holds
        the path)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.run(rotation_id))
        pipe.get(keys.active(path))
        raw, holder = pipe.execute()
        record = from_hash(decode(raw)) if raw else None
        if not holder:
            return record, None
        active = record if _s(holder) == rotation_id else self.get(_s(holder))
        return record, active if active is not None and active.is_active else None

    def last(self, path: str) -> RunRecord | None:
        """The most recent rotation on ``path``, whatever its state."""
        rotation_id = self.client.get(keys.last(path))
        return self.get(_s(rotation_id)) if rotation_id else None

    def list(self, states: Iterable[str] | None = None, limit: int = 50) -> list[RunRecord]:
        """Up to ``limit`` runs, most recently updated first, optionally only in ``states``.

        Ids whose record expired (see :meth:`create`'s ``expire``) leave the index here."""
        wanted = set(states) if states is not None else None
        out: list[RunRecord] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:
            ids = self.client.zrevrange(keys.RUNS, start, start + page - 1)
            if not ids:
                break
            for rotation_id in ids:
                record = self.get(_s(rotation_id))
                if record is None:
                    self.client.zrem(keys.RUNS, _s(rotation_id))
                    start -= 1
                    continue
                if wanted is None or record.state in wanted:
                    out.append(record)
                    if len(out) == limit:
                        break
            start += page
        return out

    def sealed(self, rotation_id: str) -> str | None:
        """The sealed (encrypted) new value of the rotation, if one is held."""
        sealed, minted = self.client.hmget(keys.run(rotation_id), ["sealed", "minted"])
        blob = sealed or minted
        return _s(blob) if blob else None

    def may_be_applied(self, rotation_id: str) -> bool:
        """True while an updater's sealed value is held: the target may already use it."""
        return bool(self.client.hexists(keys.run(rotation_id), "sealed"))

    # --- writes ------------------------------------------------------------------------------

    def create(
        self,
        record: RunRecord,
        *,
        lease: tuple[str, float] | None = None,
        expire: float | None = None,
    ) -> RunRecord:
        """Store a new run and return it as stored. An active one also claims its path.

        ``lease=(owner, seconds)`` also takes a leased run's lease, as :meth:`acquire` would
        (counting one attempt), in the same step. ``expire`` (seconds) lets a record that
        decided something without storing anything (skipped, refused) expire; it becomes the
        path's last-run pointer only where the path has no last run (a decision never hides
        the run it was about), so forged or stale events cannot grow Redis without bound.
        Raises :class:`PathBusy` if another active rotation holds the path, and
        :class:`IllegalTransition` (with the existing state) if the id already exists.
        """
        return self.start(record, lease=lease, expire=expire)[0]

    def start(
        self,
        record: RunRecord,
        *,
        lease: tuple[str, float] | None = None,
        expire: float | None = None,
    ) -> tuple[RunRecord, float | None]:
        """:meth:`create`, also saying how many seconds ago the path's previous run last
        changed (``None`` when it has none): a caller that read the secret before can tell
        whether that run may have written a version since."""
        values = {k: v for k, v in record.to_dict().items() if k not in RESERVED}
        values.update(created_at=record.created_at or now_iso())
        owner, seconds = lease or ("", 0.0)
        ttl = "" if expire is None else str(max(1, int(expire)))
        argv = [record.rotation_id, owner, int(seconds * 1000), ttl, "state", record.state]
        argv += ["rotation_id", record.rotation_id, "path", record.path, *flatten(values)]
        due = parse_time(record.finalize_after)
        if due is not None:  # a rebuilt run in grace: due when its metadata says
            argv += ["finalize_after_ms", str(int(due.timestamp() * 1000))]
        if owner and self.worker and record.state in LEASED:
            argv += ["lease_worker", self.worker]
        run_keys = [
            keys.run(record.rotation_id),
            keys.active(record.path),
            keys.last(record.path),
            keys.RUNS,
            keys.LEASES,
        ]
        reply = self._call(self._create, run_keys, argv)
        status, detail = _s(reply[0]), _s(reply[1]) if reply[1] is not None else ""
        if status == "busy" and self._release_stale(record.path, detail):
            reply = self._call(self._create, run_keys, argv)
            status, detail = _s(reply[0]), _s(reply[1]) if reply[1] is not None else ""
        if status == "exists":
            raise IllegalTransition(
                f"rotation {record.rotation_id} already exists (state {detail})",
                rotation_id=record.rotation_id,
                state=detail,
            )
        if status == "busy":
            raise PathBusy(
                f"path {record.path!r} is held by rotation {detail}",
                rotation_id=record.rotation_id,
                holder=detail,
            )
        quiet_ms = int(reply[3])
        return from_flat(reply[2]), (quiet_ms / 1000 if quiet_ms >= 0 else None)

    def transition(
        self,
        run: RunRecord | str,
        to: str,
        *,
        expect: Iterable[str] | None = None,
        owner: str | None = None,
        refuse_if_sealed: bool = False,
        due_in: float | None = None,
        seal: Sealed | None = None,
        count: tuple[str, str] | None = None,
        **changes: Any,
    ) -> RunRecord:
        """Move the run to state ``to`` and set ``changes`` (``None`` deletes a field), atomically.

        ``run`` is the record (or, at the cost of a round trip to find its path, the rotation
        id). Allowed only from states that :data:`TRANSITIONS` lets reach ``to`` (narrowed
        further by ``expect``), and, when ``owner`` is given, only while that owner holds the
        lease. ``refuse_if_sealed`` refuses while an updater's sealed value is held (it may be
        applied) and once the run has entered ``storing`` (``write_sent``: a write may land).
        Leaving the leased states drops the lease; a terminal state frees the path; leaving a
        terminal state (``retry``) claims the path again. ``sealed=None`` drops the
        sealed value; ``seal`` keeps one, only for the lease ``owner`` (see :class:`Sealed`);
        ``due_in`` (seconds) makes the run due that long after Redis's clock now: its
        ``finalize_after`` and its finalize due-queue entry (unless one is there already), in
        the same step. Leaving grace for finalizing is refused (:class:`FinalizeTooEarly`)
        before ``finalize_after`` on Redis's clock unless on-call asked for it
        (``finalize_requested``). ``count`` = (hash, field) adds 1 to a counter in the same
        step (an outcome counted once, only if the change is made). Returns the record as it
        left it.
        """
        if to not in TRANSITIONS:
            raise ValueError(f"unknown state {to!r}")
        if seal is not None and owner is None:
            raise ValueError("a sealed value is kept only by the lease owner: pass owner=")
        allowed = {s for s, targets in TRANSITIONS.items() if to in targets}
        if expect is not None:
            allowed &= set(expect)
        fields = flatten(changes)
        if seal is not None:
            fields += [seal.field, seal.blob]
        return self._apply(
            self._target(run),
            Change(to, allowed, owner, refuse_if_sealed, due_in, count),
            fields,
        )

    def begin_finalize(self, record: RunRecord) -> RunRecord:
        """Move a run in grace to ``finalizing``: only once its grace is over on Redis's clock,
        or when on-call asked for it (``finalize_requested``); else :class:`FinalizeTooEarly`.
        One clock for every worker, so a worker whose own clock runs ahead cannot end grace
        early.

        ``attempts`` starts again at 0 here: from now on it counts the tries of this finalize
        (its own budget, ``ROTATOR_MAX_ATTEMPTS``), so a finalize that went back to grace while
        the old credential was in use never spends the budget of the checks after it."""
        due = parse_time(record.finalize_after)  # for a record that predates finalize_after_ms
        legacy = "" if due is None else str(int(due.timestamp() * 1000))
        change = Change(RunState.FINALIZING, {RunState.GRACE}, legacy_due=legacy)
        fields = flatten({"step": "finalize", "attempts": 0})
        return self._apply((record.rotation_id, record.path), change, fields)

    def update(
        self, run: RunRecord | str, *, owner: str | None = None, **changes: Any
    ) -> RunRecord:
        """Set fields in whatever state the run is in now, without changing it (lease-checked
        when ``owner`` is given; refused while another owner holds a run in grace)."""
        return self._apply(self._target(run), Change("", set(), owner), flatten(changes))

    def put_note(self, run: RunRecord | str, name: str, value: str, *, owner: str) -> RunRecord:
        """Set the rotator's note ``name`` while ``owner`` holds the run's lease.

        Raises :class:`ValueError` for an invalid note and :class:`LeaseLost` when another
        worker drives the run now (what the caller noted would not be its rotation's any more).
        """
        check_note(name, value)
        if not owner:
            raise ValueError("a note is written by the lease owner only: pass owner")
        return self._apply(self._target(run), Change("", set(), owner), [NOTE_PREFIX + name, value])

    def _target(self, run: RunRecord | str) -> tuple[str, str]:
        """(rotation id, path) of ``run``; an id alone costs a read of its path."""
        if isinstance(run, RunRecord):
            return run.rotation_id, run.path
        path = self.client.hget(keys.run(run), "path")
        if path is None:
            raise RunNotFound(f"no rotation {run!r}", rotation_id=run)
        return run, _s(path)

    def _apply(
        self, target: tuple[str, str], change: Change, fields: builtins.list[str]
    ) -> RunRecord:
        rotation_id, path = target
        argv = [rotation_id, *change.argv(), *fields]
        counter = change.count[0] if change.count else keys.DUE  # not read without a counter
        run_keys = [keys.run(rotation_id), keys.active(path), keys.LEASES, keys.RUNS, keys.DUE]
        run_keys += [counter, keys.WAITING]
        reply = self._call(self._transition, run_keys, argv)
        status, detail = _s(reply[0]), _s(reply[1]) if reply[1] is not None else ""
        if status == "busy" and self._release_stale(path, detail):
            reply = self._call(self._transition, run_keys, argv)
            status, detail = _s(reply[0]), _s(reply[1]) if reply[1] is not None else ""
        if status == "ok":  # the script returns the record as it left it
            return from_flat(reply[2])
        raise refusal(status, detail, rotation_id, path, change.to or "updated")

    def _release_stale(self, path: str, holder: str) -> bool:
        """Free ``path``'s claim if its ``holder`` no longer holds it (record gone or ended):
        the rare case behind a 'busy' answer, after data loss or a hand edit."""
        freed = self._release(keys=[keys.active(path), keys.run(holder)], args=[holder])
        if freed:
            _log.warning("stale_path_claim_freed", path=path, holder=holder)
        return bool(freed)

    def acquire(self, rotation_id: str, owner: str, seconds: float) -> RunRecord | None:
        """Take the run's lease for ``owner`` if it is free, expired or already ``owner``'s, and
        return the run as leased; ``None`` if another owner holds an unexpired lease or the run
        is not in a leased state.

        Counts one attempt (the app-level poison-loop cap).
        """
        reply = self._lease_call(rotation_id, owner, seconds, "acquire")
        return from_flat(reply[2]) if _s(reply[0]) == "ok" else None

    def acquire_lease(self, rotation_id: str, owner: str, seconds: float) -> bool:
        """Like :meth:`acquire`, but only say whether the lease was taken."""
        return self.acquire(rotation_id, owner, seconds) is not None

    def renew_lease(self, rotation_id: str, owner: str, seconds: float) -> None:
        """Extend ``owner``'s lease; raise :class:`LeaseLost` if it is no longer ``owner``'s."""
        reply = self._lease_call(rotation_id, owner, seconds, "renew")
        if _s(reply[0]) != "ok":
            raise LeaseLost(
                f"rotation {rotation_id}: lease lost ({_s(reply[0])} {_s(reply[1])})",
                rotation_id=rotation_id,
            )

    def release_lease(self, rotation_id: str, owner: str, hold_seconds: float) -> None:
        """Give the lease up but keep the run off the re-drive list for ``hold_seconds``.

        Used before a Celery retry with a countdown: the retried task takes the lease again.
        """
        self._lease_call(rotation_id, owner, hold_seconds, "release")

    def claim_expired(self, lease_seconds: float, limit: int = 100) -> builtins.list[str]:
        """Rotation ids whose lease expired (their worker died); each is held off for a lease."""
        ids = self._claim_expired(keys=[keys.LEASES], args=[int(lease_seconds * 1000), limit])
        return [_s(i) for i in ids]

    def hold(self, rotation_id: str, owner: str, seconds: float, state: str = "grace") -> str:
        """Hold a run in ``state`` (which no worker drives) for ``owner``, atomically.

        While held (until :meth:`unhold`, a transition by ``owner``, or ``seconds`` pass),
        every transition and update without ``owner`` raises :class:`RunHeld`. Returns
        ``"ok"``, or why not: ``"state <current>"`` or ``"held <owner>"``.
        """
        reply = self._call(
            self._hold, [keys.run(rotation_id)], [owner, int(seconds * 1000), state, "hold"]
        )
        status, detail = _s(reply[0]), _s(reply[1])
        return status if status == "ok" else f"{status} {detail}"

    def unhold(self, rotation_id: str, owner: str, state: str = "grace") -> None:
        """Give up ``owner``'s hold (a no-op when it is not held by ``owner``)."""
        self._call(self._hold, [keys.run(rotation_id)], [owner, 0, state, "unhold"])

    def forget_expired_lease(self, rotation_id: str) -> None:
        """Drop ``rotation_id`` from the lease index (it is no longer in a leased state)."""
        self.client.zrem(keys.LEASES, rotation_id)

    # --- internals ---------------------------------------------------------------------------

    def _lease_call(self, rotation_id: str, owner: str, seconds: float, mode: str) -> Any:
        return self._call(
            self._lease,
            [keys.run(rotation_id), keys.LEASES],
            [rotation_id, owner, int(seconds * 1000), mode, self.worker],
        )

    def _call(self, script: Any, key_list: builtins.list[str], argv: builtins.list[Any]) -> Any:
        """Run ``script`` (the :class:`~orchestrator.state.recorder.Recorder` sends its queued
        writes in the same round trip)."""
        return script(keys=key_list, args=argv)
