"""The run store: one Redis hash per rotation (its state, never a secret value) and its rules.

Every state change is an atomic check-and-set in a Lua script: it refuses a transition that
:data:`TRANSITIONS` does not allow, one from a worker whose lease was taken over, and an active
state on a path another rotation holds. The same scripts keep the side indexes in step: the
path's active claim (one rotation per path), the lease index the sweeper re-drives from, and
the ``status`` index of every run by last update.

A rotator's notes (:class:`rotators.Notes`) are fields ``note.<name>`` of the same hash, in clear.
The only sensitive fields are ``sealed`` (an updater's minted value, Fernet-encrypted, kept from
before ``apply`` until the new version is stored) and ``minted`` (the same for other strategies,
so a resumed rotation reuses its value). :class:`RunRecord` only says whether one is set.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import redis

from orchestrator.errors import (
    FinalizeTooEarly,
    IllegalTransition,
    LeaseLost,
    PathBusy,
    RunHeld,
    RunNotFound,
)
from orchestrator.state import keys
from rotators.contract import check_note
from rotators.versions import parse_time

if TYPE_CHECKING:
    from orchestrator.state.outbox import Outbox

#: States that hold their path: no other rotation may start on it (needs_attention too, so a
#: half-done rotation is resolved by a human before another begins).
ACTIVE_STATES: Final = (
    "queued",
    "minting",
    "applying",
    "verifying",
    "storing",
    "grace",
    "finalizing",
    "needs_attention",
)
#: States a rotation ends in; the path is free again.
TERMINAL_STATES: Final = ("done", "failed", "cancelled", "rolled_back", "skipped")
STATES: Final = ACTIVE_STATES + TERMINAL_STATES
#: States a worker is driving: they carry a lease that the sweeper re-drives when it expires.
LEASED_STATES: Final = ("queued", "minting", "applying", "verifying", "storing", "finalizing")

_FROM_ATTENTION = frozenset(
    {"queued", "minting", "applying", "verifying", "storing", "grace", "finalizing"}
    | {"cancelled", "rolled_back", "failed", "done"}
)
#: Legal transitions: state -> states it may move to. A vault-only rotator's run goes from
#: ``queued`` straight to ``storing``: its mint and verify touch nothing outside the worker.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "queued": frozenset(
        {"minting", "storing", "grace", "failed", "needs_attention", "cancelled", "skipped"}
    ),
    "minting": frozenset(
        {"minting", "applying", "verifying", "storing", "grace"}
        | {"failed", "needs_attention", "cancelled"}
    ),
    "applying": frozenset(
        {"applying", "verifying", "minting", "grace", "failed", "needs_attention", "cancelled"}
    ),
    "verifying": frozenset(
        {"verifying", "storing", "minting", "grace", "failed", "needs_attention", "cancelled"}
    ),
    "storing": frozenset(
        {"storing", "applying", "verifying", "grace", "minting", "failed", "needs_attention"}
    ),
    "grace": frozenset({"finalizing", "rolled_back", "needs_attention", "cancelled"}),
    "finalizing": frozenset({"finalizing", "done", "grace", "needs_attention", "failed"}),
    "needs_attention": _FROM_ATTENTION,
    "failed": frozenset({"queued"}),
    "done": frozenset(),
    "cancelled": frozenset(),
    "rolled_back": frozenset(),
    "skipped": frozenset(),
}


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
    (the blob itself never leaves the store's API). ``notes`` are the rotator's notes of this
    rotation.
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
    sealed: bool = False
    notes: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_active(self) -> bool:
        """True while the rotation holds its path."""
        return self.state in ACTIVE_STATES

    @property
    def is_terminal(self) -> bool:
        """True once the rotation has ended."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``status --json`` prints). Every field but ``notes`` is a
        scalar, so a shallow copy (``dataclasses.asdict`` deep-copies, at several times the
        cost)."""
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        out["notes"] = dict(self.notes)
        return out


_INT_FIELDS = frozenset({"from_version", "new_version", "attempts", "mint_attempts"})
_FIELD_NAMES = tuple(f.name for f in fields(RunRecord))
_RECORD_FIELDS = frozenset(_FIELD_NAMES)
#: Fields derived in :func:`_record` from what the scripts store (``*_ms`` on Redis's clock).
_DERIVED = frozenset({"sealed", "lease_until", "notes", "updated_at"})
#: The fields stored as they are.
_PLAIN_FIELDS = tuple(name for name in _FIELD_NAMES if name not in _DERIVED)
#: Hash fields the store manages itself; callers may not set them through ``**changes``.
_RESERVED = frozenset(
    {"state", "sealed", "lease_until", "lease_owner", "rotation_id", "path", "finalize_after"}
    | {"notes", "updated_at"}
)
#: The hash field of note ``name`` is ``note.<name>``.
NOTE_PREFIX = "note."


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _record(raw: Mapping[str, str]) -> RunRecord:
    values: dict[str, Any] = {}
    for name in _PLAIN_FIELDS:
        if name in raw and raw[name] != "":
            values[name] = int(raw[name]) if name in _INT_FIELDS else raw[name]
    lease_ms = raw.get("lease_until_ms")
    if lease_ms:
        values["lease_until"] = _iso_ms(lease_ms)
    due_ms = raw.get("finalize_after_ms")
    if due_ms:
        values["finalize_after"] = _iso_ms(due_ms)
    changed_ms = raw.get("updated_ms")
    values["updated_at"] = _iso_ms(changed_ms) if changed_ms else raw.get("updated_at", "")
    values["sealed"] = bool(raw.get("sealed") or raw.get("minted"))
    values["notes"] = {
        k.removeprefix(NOTE_PREFIX): v for k, v in raw.items() if k.startswith(NOTE_PREFIX)
    }
    return RunRecord(**values)


def _iso_ms(value: str) -> str:
    """An epoch-milliseconds field as ISO 8601 UTC."""
    return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat(timespec="milliseconds")


def _from_flat(flat: builtins.list[Any]) -> RunRecord:
    """A record from a script's ``HGETALL`` reply (a flat field/value list)."""
    return _record(_decode(dict(zip(flat[::2], flat[1::2], strict=True))))


def _flatten(changes: Mapping[str, Any]) -> list[str]:
    """``[field, value, ...]`` for the scripts; ``None`` becomes ``""`` (the script deletes it)."""
    out: list[str] = []
    for name, value in changes.items():
        if name == "sealed" and value is None:  # the one way to drop the sealed value
            out += ["sealed", "", "minted", ""]
            continue
        if name not in _RECORD_FIELDS or name in _RESERVED:
            raise ValueError(f"not a settable run field: {name!r}")
        out += [name, "" if value is None else str(value)]
    return out


def _lua_set(states: Iterable[str]) -> str:
    """A Lua table literal ``{a=true, ...}`` of ``states`` (names are plain identifiers)."""
    return "{" + ", ".join(f"{state}=true" for state in states) + "}"


# Shared Lua prelude: Redis TIME in ms, the state sets, "set these fields, deleting empty
# ones", and "may this run claim the path?".
_PRELUDE = (
    f"local TERMINAL = {_lua_set(TERMINAL_STATES)}\n"
    f"local LEASED = {_lua_set(LEASED_STATES)}\n"
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function apply_fields(key, from)
  for i = from, #ARGV, 2 do
    if ARGV[i + 1] == '' then redis.call('HDEL', key, ARGV[i])
    else redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
  end
  redis.call('HSET', key, 'updated_ms', now)
end
local function holder_ok(path_key, rid, run_prefix)
  local holder = redis.call('GET', path_key)
  if (not holder) or holder == rid then return true, nil end
  local hstate = redis.call('HGET', run_prefix .. holder, 'state')
  if (not hstate) or TERMINAL[hstate] then return true, nil end
  return false, holder
end
"""
)

# KEYS: run, active(path), last(path), runs-index, run-key-prefix, leases
# ARGV: rotation_id, lease owner ('' = none), lease_ms, ttl seconds ('' = keep), field, value, ...
# A ttl makes the record (and the path's pointer to it) expire: decisions that stored nothing.
# Returns {'ok', state, record as HGETALL, ms since the path's previous run last changed or -1},
# {'exists', state} or {'busy', holder}.
_CREATE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'state')}
end
local state = nil
for i = 5, #ARGV, 2 do if ARGV[i] == 'state' then state = ARGV[i + 1] end end
if not TERMINAL[state] then
  local ok, holder = holder_ok(KEYS[2], ARGV[1], KEYS[5])
  if not ok then return {'busy', holder} end
  redis.call('SET', KEYS[2], ARGV[1])
end
apply_fields(KEYS[1], 5)
local quiet = -1
local previous = redis.call('GET', KEYS[3])
if previous then
  local changed = redis.call('ZSCORE', KEYS[4], previous)
  if changed then quiet = now - tonumber(changed) end
end
if ARGV[2] ~= '' and LEASED[state] then
  local until_ms = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2], 'lease_until_ms', until_ms)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZADD', KEYS[6], until_ms, ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
if ARGV[4] ~= '' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
end
return {'ok', state, redis.call('HGETALL', KEYS[1]), quiet}
"""
)

# KEYS: run, leases, runs-index, run-key-prefix, active-key-prefix, due, counter hash
# ARGV: rotation_id, to_state ('' = keep the state: an update), allowed-from csv,
#       owner ('' = any), require-no-seal ('1'/''), due_in_ms ('' = none: else the run is due
#       that long after Redis's now, kept as finalize_after_ms and in the due-queue),
#       counter field ('' = none; incremented only if the change is made),
#       fallback due ms for grace -> finalizing of a record without finalize_after_ms ('' none),
#       field, value, ...
# The path's active key is the prefix plus the run's own ``path`` field (never changes).
# Leaving grace for finalizing is refused before finalize_after_ms on Redis's clock (one clock
# for every worker) unless on-call asked for it (finalize_requested).
# Returns {'ok', previous state, record as HGETALL} or {why, detail[, path]}.
_TRANSITION = (
    _PRELUDE
    + """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
local to = ARGV[2]
if to == '' then
  to = cur
else
  local allowed = {}
  for s in string.gmatch(ARGV[3], '[^,]+') do allowed[s] = true end
  if not allowed[cur] then return {'illegal', cur} end
end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[4] then
  return {'lease', cur}
end
if ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], 'sealed') == 1 then return {'sealed', cur} end
if cur == 'grace' then
  local holder = redis.call('HGET', KEYS[1], 'lease_owner')
  local held = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
  if holder and holder ~= ARGV[4] and held > now then return {'held', holder} end
  if to == 'finalizing' and not redis.call('HGET', KEYS[1], 'finalize_requested') then
    local due = tonumber(redis.call('HGET', KEYS[1], 'finalize_after_ms') or ARGV[8])
    if (not due) or due > now then return {'early', tostring(due or '')} end
  end
end
local path = redis.call('HGET', KEYS[1], 'path')
local active = KEYS[5] .. path
if TERMINAL[to] then
  if redis.call('GET', active) == ARGV[1] then redis.call('DEL', active) end
elseif TERMINAL[cur] then
  local ok, holder = holder_ok(active, ARGV[1], KEYS[4])
  if not ok then return {'busy', holder, path} end
  redis.call('SET', active, ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', to)
apply_fields(KEYS[1], 9)
if LEASED[to] then
  local lu = redis.call('HGET', KEYS[1], 'lease_until_ms')
  redis.call('ZADD', KEYS[2], lu or now, ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until_ms')
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
if ARGV[6] ~= '' then
  local due = now + tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'finalize_after_ms', due)
  redis.call('ZADD', KEYS[6], 'NX', due, ARGV[1])
end
if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[7], 1) end
return {'ok', cur, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: run, leases
# ARGV: rotation_id, owner, lease_ms, mode ('acquire' | 'renew' | 'release')
# Returns {'ok', lease_until_ms[, record as HGETALL when acquired]} or {why, detail}.
_LEASE = (
    _PRELUDE
    + """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
if not LEASED[cur] then return {'state', cur} end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
local mode = ARGV[4]
if owner and owner ~= '' and owner ~= ARGV[2] then
  if mode ~= 'acquire' or lu > now then return {'held', owner} end
end
if mode ~= 'acquire' and owner ~= ARGV[2] then return {'held', owner or ''} end
local until_ms = now + tonumber(ARGV[3])
if mode == 'release' then redis.call('HDEL', KEYS[1], 'lease_owner')
else redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2]) end
redis.call('HSET', KEYS[1], 'lease_until_ms', until_ms)
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
if mode == 'acquire' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  return {'ok', tostring(until_ms), redis.call('HGETALL', KEYS[1])}
end
return {'ok', tostring(until_ms)}
"""
)

# KEYS: run   ARGV: owner, hold_ms, state, mode ('hold' | 'unhold')
# A hold is a lease on a run in a state no worker drives (grace): while it lasts, transitions
# without that owner are refused. It is not in the lease index, so nothing re-drives it.
_HOLD = (
    _PRELUDE
    + """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= ARGV[3] then return {'state', cur or ''} end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if ARGV[4] == 'unhold' then
  if owner == ARGV[1] then redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until_ms') end
  return {'ok', ''}
end
if owner and owner ~= ARGV[1] and lu > now then return {'held', owner} end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_until_ms', now + tonumber(ARGV[2]))
return {'ok', ''}
"""
)

# KEYS: leases   ARGV: lease_ms, limit
# Claim expired leases for re-driving: bump each score so the next sweep does not re-drive it
# again before the re-driven task has had a lease's time to run.
_CLAIM_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), id) end
return ids
"""


def _csv(states: Iterable[str]) -> str:
    return ",".join(states)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RunStore:
    """Run records in Redis. Every write is atomic and checked; reads never return secrets.

    With an ``outbox``, a worker's queued history and metric writes go to Redis in the same
    round trip as the store's next script (see :mod:`orchestrator.state.outbox`).
    """

    def __init__(self, client: redis.Redis, outbox: Outbox | None = None) -> None:
        self.client = client
        self.outbox = outbox
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._lease = client.register_script(_LEASE)
        self._claim_expired = client.register_script(_CLAIM_EXPIRED)
        self._hold = client.register_script(_HOLD)

    # --- reads -------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Redis's clock: the one clock every worker judges due times by."""
        seconds, micros = self.client.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)

    def get(self, rotation_id: str) -> RunRecord | None:
        """The run record of ``rotation_id``, or ``None``."""
        raw = _decode(self.client.hgetall(keys.run(rotation_id)))
        return _record(raw) if raw else None

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
        record = _record(_decode(raw)) if raw else None
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
        decided something without storing anything (skipped, refused) expire, and the path's
        pointer to it with it, so forged or stale events cannot grow Redis without bound.
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
        values = {k: v for k, v in record.to_dict().items() if k not in _RESERVED}
        values.update(created_at=record.created_at or now_iso())
        owner, seconds = lease or ("", 0.0)
        ttl = "" if expire is None else str(max(1, int(expire)))
        argv = [record.rotation_id, owner, int(seconds * 1000), ttl, "state", record.state]
        argv += ["rotation_id", record.rotation_id, "path", record.path, *_flatten(values)]
        due = parse_time(record.finalize_after)
        if due is not None:  # a rebuilt run in grace: due when its metadata says
            argv += ["finalize_after_ms", str(int(due.timestamp() * 1000))]
        reply = self._call(
            self._create,
            [
                keys.run(record.rotation_id),
                keys.active(record.path),
                keys.last(record.path),
                keys.RUNS,
                keys.run(""),
                keys.LEASES,
            ],
            argv,
        )
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
        return _from_flat(reply[2]), (quiet_ms / 1000 if quiet_ms >= 0 else None)

    def transition(
        self,
        rotation_id: str,
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

        Allowed only from states that :data:`TRANSITIONS` lets reach ``to`` (narrowed further by
        ``expect``), and, when ``owner`` is given, only while that owner holds the lease.
        ``refuse_if_sealed`` refuses while an updater's sealed value is held (it may be applied).
        Leaving the leased states drops the lease; a terminal state frees the path; leaving a
        terminal state (``retry``) claims the path again. ``sealed=None`` drops the sealed value;
        ``seal`` keeps one, only for the lease ``owner`` (see :class:`Sealed`); ``due_in``
        (seconds) makes the run due that long after Redis's clock now: its ``finalize_after``
        and its finalize due-queue entry (unless one is there already), in the same step.
        Leaving grace for finalizing is refused (:class:`FinalizeTooEarly`) before
        ``finalize_after`` on Redis's clock unless on-call asked for it (``finalize_requested``).
        ``count`` = (hash, field) adds 1 to a counter in the same step (an outcome counted
        once, only if the change is made). Returns the record as it left it.
        """
        if to not in TRANSITIONS:
            raise ValueError(f"unknown state {to!r}")
        if seal is not None and owner is None:
            raise ValueError("a sealed value is kept only by the lease owner: pass owner=")
        allowed = {s for s, targets in TRANSITIONS.items() if to in targets}
        if expect is not None:
            allowed &= set(expect)
        fields = _flatten(changes)
        if seal is not None:
            fields += [seal.field, seal.blob]
        due_ms = None if due_in is None else int(due_in * 1000)
        return self._apply(rotation_id, to, allowed, owner, refuse_if_sealed, due_ms, fields, count)

    def begin_finalize(self, record: RunRecord) -> RunRecord:
        """Move a run in grace to ``finalizing``: only once its grace is over on Redis's clock,
        or when on-call asked for it (``finalize_requested``); else :class:`FinalizeTooEarly`.
        One clock for every worker, so a worker whose own clock runs ahead cannot end grace
        early."""
        due = parse_time(record.finalize_after)  # for a record that predates finalize_after_ms
        legacy = "" if due is None else str(int(due.timestamp() * 1000))
        allowed = {"grace"}
        fields = _flatten({"step": "finalize"})
        return self._apply(
            record.rotation_id, "finalizing", allowed, None, False, None, fields, None, legacy
        )

    def update(self, rotation_id: str, *, owner: str | None = None, **changes: Any) -> RunRecord:
        """Set fields in whatever state the run is in now, without changing it (lease-checked
        when ``owner`` is given; refused while another owner holds a run in grace)."""
        return self._apply(rotation_id, "", set(), owner, False, None, _flatten(changes))

    def _apply(
        self,
        rotation_id: str,
        to: str,
        allowed: set[str],
        owner: str | None,
        refuse_if_sealed: bool,
        due_ms: int | None,
        fields: builtins.list[str],
        count: tuple[str, str] | None = None,
        legacy_due: str = "",
    ) -> RunRecord:
        argv = [
            rotation_id,
            to,
            _csv(sorted(allowed)),
            owner or "",
            "1" if refuse_if_sealed else "",
            "" if due_ms is None else str(due_ms),
            count[1] if count else "",
            legacy_due,
            *fields,
        ]
        reply = self._call(
            self._transition,
            [
                keys.run(rotation_id),
                keys.LEASES,
                keys.RUNS,
                keys.run(""),
                keys.active(""),
                keys.DUE,
                count[0] if count else keys.DUE,  # unused without a counter
            ],
            argv,
        )
        status, detail = _s(reply[0]), _s(reply[1]) if reply[1] is not None else ""
        if status == "ok":  # the script returns the record as it left it
            return _from_flat(reply[2])
        to = to or "updated"
        if status == "missing":
            raise RunNotFound(f"no rotation {rotation_id!r}", rotation_id=rotation_id)
        if status == "lease":
            raise LeaseLost(
                f"rotation {rotation_id}: another worker holds the lease", rotation_id=rotation_id
            )
        if status == "sealed":
            raise IllegalTransition(
                f"rotation {rotation_id} is {detail} and its new value may already be applied at "
                f"the target; retry it instead of moving it to {to}",
                rotation_id=rotation_id,
                state=detail,
            )
        if status == "busy":
            raise PathBusy(
                f"path {_s(reply[2])!r} is held by rotation {detail}",
                rotation_id=rotation_id,
                holder=detail,
            )
        if status == "early":
            raise FinalizeTooEarly(
                f"rotation {rotation_id} is in grace until {_iso_ms(detail) if detail else '?'} "
                "(Redis's clock) and no early finalize was requested",
                rotation_id=rotation_id,
                state="grace",
            )
        if status == "held":
            raise RunHeld(
                f"rotation {rotation_id} is held by {detail} (e.g. a rollback); it cannot "
                f"become {to} now",
                rotation_id=rotation_id,
                state="grace",
            )
        raise IllegalTransition(
            f"rotation {rotation_id} is {detail}; it cannot become {to}",
            rotation_id=rotation_id,
            state=detail,
        )

    def put_note(self, rotation_id: str, name: str, value: str, *, owner: str) -> RunRecord:
        """Set the rotator's note ``name`` while ``owner`` holds the run's lease.

        Raises :class:`ValueError` for an invalid note and :class:`LeaseLost` when another
        worker drives the run now (what the caller noted would not be its rotation's any more).
        """
        check_note(name, value)
        if not owner:
            raise ValueError("a note is written by the lease owner only: pass owner")
        return self._apply(rotation_id, "", set(), owner, False, None, [NOTE_PREFIX + name, value])

    def acquire(self, rotation_id: str, owner: str, seconds: float) -> RunRecord | None:
        """Take the run's lease for ``owner`` if it is free, expired or already ``owner``'s, and
        return the run as leased; ``None`` if another owner holds an unexpired lease or the run
        is not in a leased state.

        Counts one attempt (the app-level poison-loop cap).
        """
        reply = self._lease_call(rotation_id, owner, seconds, "acquire")
        return _from_flat(reply[2]) if _s(reply[0]) == "ok" else None

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
            [rotation_id, owner, int(seconds * 1000), mode],
        )

    def _call(self, script: Any, key_list: builtins.list[str], argv: builtins.list[Any]) -> Any:
        """Run ``script``; with an outbox, this thread's queued writes go in the same trip."""
        if self.outbox is not None:
            return self.outbox.call(script, key_list, argv)
        return script(keys=key_list, args=argv)


@dataclass(frozen=True)
class Sealed:
    """A sealed (Fernet-encrypted) new value to keep in the run, and how it may be in use.

    ``in_place`` (updaters): it may be applied at the target before it is stored.
    """

    blob: str
    in_place: bool = True

    @property
    def field(self) -> str:
        """The run hash field that holds it."""
        return "sealed" if self.in_place else "minted"
