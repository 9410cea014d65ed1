"""Every Lua script of the state store (``orchestrator/state/lua``), branch by branch, on a real
Redis. A case writes the keys' state before, runs the script through the product's loader with
its KEYS and ARGV, then compares the reply and every key of the database (TTLs included). Times
are relative to Redis's clock (:class:`At`, :class:`Since`), so nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest
import redis

from orchestrator.state import keys, scripts
from orchestrator.state.records import ACTIVE as ACTIVE_STATES
from orchestrator.state.records import LEASED as LEASED_STATES
from orchestrator.state.records import TERMINAL as TERMINAL_STATES
from tests.fixtures.keyspace import (
    At,
    Expiring,
    Since,
    Stream,
    Zset,
    clock_ms,
    expected,
    read,
    write,
    written,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Stored:
    """In an expected reply: what ``key`` holds after the case (a record, as HGETALL)."""

    key: str


@dataclass(frozen=True)
class Fails:
    """An expected reply: the script answers with an error that matches ``match``."""

    match: str


@dataclass(frozen=True)
class Case:
    """One run of a script. ``after`` holds only the keys that change (``None``: deleted); every
    other key must hold what it held before, and no other key may appear."""

    name: str
    before: Mapping[str, Any]
    keys: Sequence[str]
    args: Sequence[Any]
    reply: Any
    after: Mapping[str, Any] = field(default_factory=dict)


def check(client: redis.Redis, script: str, case: Case) -> None:
    """Run ``case`` through :func:`orchestrator.state.scripts.register` and compare."""
    start = clock_ms(client)
    write(client, written(case.before, start))
    run = scripts.register(client, script)
    call = {"keys": list(case.keys), "args": written(list(case.args), start)}
    reply: Any = None
    if isinstance(case.reply, Fails):
        with pytest.raises(redis.ResponseError, match=case.reply.match):
            run(**call)
    else:
        reply = run(**call)
    end = clock_ms(client)
    state = expected(
        {k: v for k, v in {**case.before, **case.after}.items() if v is not None}, start, end
    )
    assert read(client) == state
    if not isinstance(case.reply, Fails):
        assert _records(reply) == _stored(expected(case.reply, start, end), state)


def _records(reply: Any) -> Any:
    """A reply with each record in it (a flat field, value list) as a dict."""
    if not isinstance(reply, list):
        return reply
    return [dict(zip(x[::2], x[1::2], strict=True)) if isinstance(x, list) else x for x in reply]


def _stored(reply: Any, state: Mapping[str, Any]) -> Any:
    if not isinstance(reply, list):
        return reply
    held = [state[x.key] if isinstance(x, Stored) else x for x in reply]
    return [x.value if isinstance(x, Expiring) else x for x in held]


def cases(table: Sequence[Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", table, ids=lambda case: case.name)


HOUR = 3_600_000
LEASE = 30_000
RID, OTHER = "r1", "r0"
PATH = "a/b"
RUN, RUN0 = keys.run(RID), keys.run(OTHER)
ACTIVE, LAST = keys.active(PATH), keys.last(PATH)
RUNS, LEASES, DUE, COUNTS = keys.RUNS, keys.LEASES, keys.DUE, keys.METRIC_OUTCOMES
WAITING = keys.WAITING
TERMINAL = sorted(str(s) for s in TERMINAL_STATES)


def changed(record: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """``record`` with ``fields`` set (``None`` deletes one)."""
    return {k: v for k, v in {**record, **fields}.items() if v is not None}


def stamped(record: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """``record`` as a script that sets fields leaves it: ``updated_ms`` is Redis's clock."""
    return changed(record, **fields, updated_ms=At())


# --- run_create ----------------------------------------------------------------------------

CREATE = (RUN, ACTIVE, LAST, RUNS, LEASES)
CREATED = {LAST: RID, RUNS: Zset({RID: At()})}


def create(state: str, owner: str = "", ttl: str = "") -> tuple[Any, ...]:
    return (RID, owner, LEASE, ttl, "state", state, "path", PATH)


def new(state: str, **fields: Any) -> dict[str, Any]:
    return {"state": state, "path": PATH, "updated_ms": At(), **fields}


def ok(state: str, quiet: Any = -1) -> list[Any]:
    return ["ok", state, Stored(RUN), quiet]


RUN_CREATE = [
    Case("exists", {RUN: {"state": "grace"}}, CREATE, create("queued"), ["exists", "grace"]),
    Case("busy", {ACTIVE: OTHER}, CREATE, create("queued", "w1"), ["busy", OTHER]),
    Case(
        "an active run claims the free path",
        {},
        CREATE,
        create("queued"),
        ok("queued"),
        {RUN: new("queued"), ACTIVE: RID, **CREATED},
    ),
    Case(
        "needs_attention claims the path too",
        {},
        CREATE,
        create("needs_attention", "w1"),
        ok("needs_attention"),
        {RUN: new("needs_attention"), ACTIVE: RID, **CREATED},
    ),
    Case(
        "a path claimed by the run itself is not busy",
        {ACTIVE: RID},
        CREATE,
        create("queued"),
        ok("queued"),
        {RUN: new("queued"), **CREATED},
    ),
    *(
        Case(
            f"{state} claims nothing, even on a path another run holds",
            {ACTIVE: OTHER},
            CREATE,
            create(state, "w1"),
            ok(state),
            {RUN: new(state), **CREATED},
        )
        for state in TERMINAL
    ),
    *(
        Case(
            f"{state} with an owner takes the lease",
            {},
            CREATE,
            create(state, "w1"),
            ok(state),
            {
                RUN: new(state, lease_owner="w1", lease_until_ms=At(LEASE), attempts="1"),
                ACTIVE: RID,
                LEASES: Zset({RID: At(LEASE)}),
                **CREATED,
            },
        )
        for state in sorted(str(s) for s in LEASED_STATES)
    ),
    Case(
        "grace with an owner takes no lease",
        {},
        CREATE,
        create("grace", "w1"),
        ok("grace"),
        {RUN: new("grace"), ACTIVE: RID, **CREATED},
    ),
    Case(
        "ttl: the record expires and becomes the last run of a path that has none",
        {},
        CREATE,
        create("skipped", ttl="86400"),
        ok("skipped"),
        {RUN: Expiring(new("skipped"), 86400), LAST: Expiring(RID, 86400), RUNS: Zset({RID: At()})},
    ),
    Case(
        "ttl: a decision never replaces the path's last run",
        {LAST: OTHER},
        CREATE,
        create("skipped", ttl="86400"),
        ok("skipped"),
        {RUN: Expiring(new("skipped"), 86400), LAST: OTHER, RUNS: Zset({RID: At()})},
    ),
    Case(
        "quiet: ms since the path's previous run last changed",
        {LAST: OTHER, RUNS: Zset({OTHER: At(-HOUR)})},
        CREATE,
        create("queued"),
        ok("queued", Since(-HOUR)),
        {RUN: new("queued"), ACTIVE: RID, LAST: RID, RUNS: Zset({OTHER: At(-HOUR), RID: At()})},
    ),
    Case(
        "quiet -1: the previous run is not in the status index",
        {LAST: OTHER},
        CREATE,
        create("queued"),
        ok("queued"),
        {RUN: new("queued"), ACTIVE: RID, **CREATED},
    ),
]


@cases(RUN_CREATE)
def test_run_create(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "run_create", case)


# --- run_transition ------------------------------------------------------------------------

MOVE = (RUN, ACTIVE, LEASES, RUNS, DUE, COUNTS, WAITING)
TOUCHED = {RUNS: Zset({RID: At()})}
DRIVEN = {"state": "minting", "path": PATH, "lease_owner": "w1", "lease_until_ms": At(HOUR)}
DRIVING = {RUN: DRIVEN, ACTIVE: RID, LEASES: Zset({RID: At(HOUR)}), RUNS: Zset({RID: At(-HOUR)})}
IN_GRACE = {"state": "grace", "path": PATH, "finalize_after_ms": At(-HOUR)}
GRACE = {RUN: IN_GRACE, ACTIVE: RID, RUNS: Zset({RID: At(-HOUR)})}
GRACE_AHEAD = {**GRACE, RUN: changed(IN_GRACE, finalize_after_ms=At(HOUR))}
GRACE_UNDATED = {**GRACE, RUN: changed(IN_GRACE, finalize_after_ms=None)}
HELD = {**GRACE, RUN: changed(IN_GRACE, lease_owner="rb", lease_until_ms=At(HOUR))}
HOLD_OVER = {**GRACE, RUN: changed(IN_GRACE, lease_owner="rb", lease_until_ms=At(-HOUR))}
ENDED = {RUN: {"state": "failed", "path": PATH}, RUNS: Zset({RID: At(-HOUR)})}
IN_FINALIZE = {**IN_GRACE, "state": "finalizing", "lease_owner": "w1", "lease_until_ms": At(HOUR)}
FINALIZING_RUN = {**GRACE, RUN: IN_FINALIZE, LEASES: Zset({RID: At(HOUR)})}
WAITED = {**IN_FINALIZE, "waiting": "3 sessions", "waiting_since_ms": At(-HOUR)}


def move(
    to: str,
    allowed: str,
    *fields: str,
    owner: str = "",
    sealed: str = "",
    due_in: str = "",
    count: str = "",
    legacy: Any = "",
) -> tuple[Any, ...]:
    return (RID, to, allowed, owner, sealed, due_in, count, legacy, *fields)


def moved(previous: str) -> list[Any]:
    return ["ok", previous, Stored(RUN)]


FINALIZED = {LEASES: Zset({RID: At()}), **TOUCHED}
UNLEASED = {"lease_owner": None, "lease_until_ms": None}

RUN_TRANSITION = [
    Case("missing", {}, MOVE, move("failed", "minting", count="x"), ["missing", ""]),
    Case(
        "illegal: not from an allowed state",
        DRIVING,
        MOVE,
        move("done", "finalizing,grace", owner="w1", count="x"),
        ["illegal", "minting"],
    ),
    Case(
        "lease: another owner's",
        DRIVING,
        MOVE,
        move("applying", "minting", owner="w2", count="x"),
        ["lease", "minting"],
    ),
    Case(
        "lease: nobody's",
        {**DRIVING, RUN: changed(DRIVEN, **UNLEASED)},
        MOVE,
        move("applying", "minting", owner="w1", count="x"),
        ["lease", "minting"],
    ),
    Case(
        "sealed: refused while a sealed value is held",
        {**DRIVING, RUN: changed(DRIVEN, sealed="blob")},
        MOVE,
        move("cancelled", "minting", owner="w1", sealed="1", count="x"),
        ["sealed", "minting"],
    ),
    Case(
        "sent: refused once the run has entered storing (a write may land late)",
        {**DRIVING, RUN: changed(DRIVEN, state="needs_attention", write_sent="1")},
        MOVE,
        move("cancelled", "minting,needs_attention", owner="w1", sealed="1", count="x"),
        ["sent", "needs_attention"],
    ),
    Case(
        "entering storing marks the run write_sent for good",
        DRIVING,
        MOVE,
        move("storing", "minting", owner="w1"),
        moved("minting"),
        {RUN: stamped(DRIVEN, state="storing", write_sent="1"), **TOUCHED},
    ),
    Case(
        "sealed asked, none held: moved",
        DRIVING,
        MOVE,
        move("cancelled", "minting", owner="w1", sealed="1"),
        moved("minting"),
        {
            RUN: stamped(DRIVEN, state="cancelled", **UNLEASED),
            ACTIVE: None,
            LEASES: None,
            **TOUCHED,
        },
    ),
    Case("held: a move", HELD, MOVE, move("cancelled", "grace", count="x"), ["held", "rb"]),
    Case("held: an update", HELD, MOVE, move("", "", "last_error", "x"), ["held", "rb"]),
    Case(
        "held: by the mover, whose move ends the hold",
        HELD,
        MOVE,
        move("rolled_back", "grace", owner="rb"),
        moved("grace"),
        {RUN: stamped(IN_GRACE, state="rolled_back"), ACTIVE: None, **TOUCHED},
    ),
    Case(
        "an expired hold refuses no one",
        HOLD_OVER,
        MOVE,
        move("cancelled", "grace"),
        moved("grace"),
        {RUN: stamped(IN_GRACE, state="cancelled"), ACTIVE: None, **TOUCHED},
    ),
    Case(
        "grace -> finalizing after finalize_after_ms",
        GRACE,
        MOVE,
        move("finalizing", "grace", "step", "finalize"),
        moved("grace"),
        {RUN: stamped(IN_GRACE, state="finalizing", step="finalize"), **FINALIZED},
    ),
    Case(
        "early: before finalize_after_ms",
        GRACE_AHEAD,
        MOVE,
        move("finalizing", "grace", count="x"),
        ["early", At(HOUR)],
    ),
    Case(
        "finalize_requested: not early",
        {**GRACE, RUN: changed(GRACE_AHEAD[RUN], finalize_requested="oncall")},
        MOVE,
        move("finalizing", "grace"),
        moved("grace"),
        {RUN: stamped(GRACE_AHEAD[RUN], state="finalizing", finalize_requested="oncall")}
        | FINALIZED,
    ),
    Case(
        "early: no due time at all", GRACE_UNDATED, MOVE, move("finalizing", "grace"), ["early", ""]
    ),
    Case(
        "early: before the legacy due time (ARGV[8])",
        GRACE_UNDATED,
        MOVE,
        move("finalizing", "grace", legacy=At(HOUR)),
        ["early", At(HOUR)],
    ),
    Case(
        "after the legacy due time",
        GRACE_UNDATED,
        MOVE,
        move("finalizing", "grace", legacy=At(-HOUR)),
        moved("grace"),
        {RUN: stamped(GRACE_UNDATED[RUN], state="finalizing"), **FINALIZED},
    ),
    Case(
        "finalize_after_ms (passed) wins over the legacy due time",
        GRACE,
        MOVE,
        move("finalizing", "grace", legacy=At(HOUR)),
        moved("grace"),
        {RUN: stamped(IN_GRACE, state="finalizing"), **FINALIZED},
    ),
    Case(
        "early: finalize_after_ms (ahead) wins over the legacy due time",
        GRACE_AHEAD,
        MOVE,
        move("finalizing", "grace", legacy=At(-HOUR)),
        ["early", At(HOUR)],
    ),
    Case(
        "early holds back finalizing only",
        GRACE_AHEAD,
        MOVE,
        move("cancelled", "grace"),
        moved("grace"),
        {RUN: stamped(GRACE_AHEAD[RUN], state="cancelled"), ACTIVE: None, **TOUCHED},
    ),
    Case(
        "busy: a retry on a path another run holds",
        {**ENDED, ACTIVE: OTHER},
        MOVE,
        move("queued", "failed", count="x"),
        ["busy", OTHER],
    ),
    Case(
        "a retry claims its free path",
        ENDED,
        MOVE,
        move("queued", "failed"),
        moved("failed"),
        {RUN: stamped(ENDED[RUN], state="queued"), ACTIVE: RID, LEASES: Zset({RID: At()})}
        | TOUCHED,
    ),
    Case(
        "a retry on a path the run holds itself",
        {**ENDED, ACTIVE: RID},
        MOVE,
        move("queued", "failed"),
        moved("failed"),
        {RUN: stamped(ENDED[RUN], state="queued"), LEASES: Zset({RID: At()}), **TOUCHED},
    ),
    *(
        Case(
            f"-> {state}: frees its claim and drops its lease",
            DRIVING,
            MOVE,
            move(state, "minting", owner="w1"),
            moved("minting"),
            {RUN: stamped(DRIVEN, state=state, **UNLEASED), ACTIVE: None, LEASES: None} | TOUCHED,
        )
        for state in TERMINAL
    ),
    Case(
        "-> a terminal state leaves another run's claim",
        {**DRIVING, ACTIVE: OTHER},
        MOVE,
        move("failed", "minting", owner="w1"),
        moved("minting"),
        {RUN: stamped(DRIVEN, state="failed", **UNLEASED), LEASES: None, **TOUCHED},
    ),
    Case(
        "leased -> leased: indexed at its lease",
        DRIVING,
        MOVE,
        move("applying", "minting", "step", "apply", owner="w1"),
        moved("minting"),
        {RUN: stamped(DRIVEN, state="applying", step="apply"), **TOUCHED},
    ),
    Case(
        "leased -> grace: the lease and its worker's name dropped, due in due_in ms",
        {**DRIVING, RUN: changed(DRIVEN, lease_worker="h:1")},
        MOVE,
        move("grace", "minting", "new_version", "2", owner="w1", due_in=str(HOUR)),
        moved("minting"),
        {
            RUN: stamped(
                DRIVEN, state="grace", new_version="2", finalize_after_ms=At(HOUR), **UNLEASED
            ),
            LEASES: None,
            DUE: Zset({RID: At(HOUR)}),
            **TOUCHED,
        },
    ),
    Case(
        "due_in: a due entry already there is kept",
        {**DRIVING, DUE: Zset({RID: At(-HOUR)})},
        MOVE,
        move("grace", "minting", owner="w1", due_in=str(HOUR)),
        moved("minting"),
        {
            RUN: stamped(DRIVEN, state="grace", finalize_after_ms=At(HOUR), **UNLEASED),
            LEASES: None,
            **TOUCHED,
        },
    ),
    Case(
        "counter: a change made counts once",
        {**DRIVING, COUNTS: {"x": "4"}},
        MOVE,
        move("failed", "minting", owner="w1", count="x"),
        moved("minting"),
        {RUN: stamped(DRIVEN, state="failed", **UNLEASED), ACTIVE: None, LEASES: None}
        | {COUNTS: {"x": "5"}, **TOUCHED},
    ),
    Case(
        "counter: the first count",
        DRIVING,
        MOVE,
        move("applying", "minting", owner="w1", count="x"),
        moved("minting"),
        {RUN: stamped(DRIVEN, state="applying"), COUNTS: {"x": "1"}, **TOUCHED},
    ),
    Case(
        "update: the state kept, a field set and an empty one deleted",
        {**DRIVING, RUN: changed(DRIVEN, last_error="boom")},
        MOVE,
        move("", "", "last_error", "", "step", "apply", owner="w1"),
        moved("minting"),
        {RUN: stamped(DRIVEN, step="apply"), **TOUCHED},
    ),
    Case(
        "update: no allowed states checked, another run's claim left",
        {**ENDED, ACTIVE: OTHER},
        MOVE,
        move("", "queued", "note.x", "y"),
        moved("failed"),
        {RUN: stamped(ENDED[RUN], **{"note.x": "y"}), **TOUCHED},
    ),
    Case(
        "waiting: the first deferral back to grace stamps and indexes when it began",
        FINALIZING_RUN,
        MOVE,
        move("grace", "finalizing", "waiting", "2 sessions", owner="w1"),
        moved("finalizing"),
        {
            RUN: stamped(
                IN_FINALIZE, state="grace", waiting="2 sessions", waiting_since_ms=At(), **UNLEASED
            ),
            LEASES: None,
            WAITING: Zset({RID: At()}),
            **TOUCHED,
        },
    ),
    Case(
        "waiting: a later deferral keeps when it began",
        {**FINALIZING_RUN, RUN: WAITED, WAITING: Zset({RID: At(-HOUR)})},
        MOVE,
        move("grace", "finalizing", "waiting", "1 session", owner="w1"),
        moved("finalizing"),
        {
            RUN: stamped(WAITED, state="grace", waiting="1 session", **UNLEASED),
            LEASES: None,
            WAITING: Zset({RID: At(-HOUR)}),
            **TOUCHED,
        },
    ),
    Case(
        "waiting: a move on to finalizing stays indexed",
        {**GRACE, RUN: changed(WAITED, state="grace", **UNLEASED), WAITING: Zset({RID: At(-HOUR)})},
        MOVE,
        move("finalizing", "grace"),
        moved("grace"),
        {
            RUN: stamped(WAITED, state="finalizing", **UNLEASED),
            LEASES: Zset({RID: At()}),
            **TOUCHED,
        },
    ),
    Case(
        "waiting: done drops it from the index",
        {**FINALIZING_RUN, RUN: WAITED, WAITING: Zset({RID: At(-HOUR)})},
        MOVE,
        move("done", "finalizing", owner="w1"),
        moved("finalizing"),
        {
            RUN: stamped(WAITED, state="done", **UNLEASED),
            ACTIVE: None,
            LEASES: None,
            WAITING: None,
            **TOUCHED,
        },
    ),
]


@cases(RUN_TRANSITION)
def test_run_transition(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "run_transition", case)


# --- run_lease -----------------------------------------------------------------------------

LEASE_KEYS = (RUN, LEASES)
MODES = ("acquire", "renew", "release")
QUEUED = {"state": "queued", "path": PATH, "attempts": "2"}
FREE = {RUN: QUEUED}
TAKEN = {RUN: changed(QUEUED, lease_owner="w1", lease_until_ms=At(LEASE), attempts="3")}
RENEWED = {RUN: changed(QUEUED, lease_owner="w1", lease_until_ms=At(LEASE))}
RELEASED = {RUN: changed(QUEUED, lease_until_ms=At(LEASE))}


def lease(mode: str) -> tuple[Any, ...]:
    return (RID, "w1", LEASE, mode)


def leased(owner: str, until: At) -> dict[str, Any]:
    return {
        RUN: changed(QUEUED, lease_owner=owner, lease_until_ms=until),
        LEASES: Zset({RID: until}),
    }


def lease_to(state: Mapping[str, Any]) -> dict[str, Any]:
    return {**state, LEASES: Zset({RID: At(LEASE)})}


ACQUIRED = ["ok", At(LEASE), Stored(RUN)]
RUN_LEASE = [
    *(Case(f"{mode}: missing", {}, LEASE_KEYS, lease(mode), ["missing", ""]) for mode in MODES),
    *(
        Case(
            f"{mode}: grace is not a leased state",
            GRACE,
            LEASE_KEYS,
            lease(mode),
            ["state", "grace"],
        )
        for mode in MODES
    ),
    Case("acquire: free", FREE, LEASE_KEYS, lease("acquire"), ACQUIRED, lease_to(TAKEN)),
    Case(
        "acquire: an empty owner is free",
        leased("", At(HOUR)),
        LEASE_KEYS,
        lease("acquire"),
        ACQUIRED,
        lease_to(TAKEN),
    ),
    Case(
        "acquire: another owner's expired lease",
        leased("w2", At(-HOUR)),
        LEASE_KEYS,
        lease("acquire"),
        ACQUIRED,
        lease_to(TAKEN),
    ),
    Case(
        "acquire: its own lease, renewed",
        leased("w1", At(HOUR)),
        LEASE_KEYS,
        lease("acquire"),
        ACQUIRED,
        lease_to(TAKEN),
    ),
    Case(
        "acquire: another owner's live lease",
        leased("w2", At(HOUR)),
        LEASE_KEYS,
        lease("acquire"),
        ["held", "w2"],
    ),
    Case(
        "renew: its own lease",
        leased("w1", At(HOUR)),
        LEASE_KEYS,
        lease("renew"),
        ["ok", At(LEASE)],
        lease_to(RENEWED),
    ),
    Case(
        "renew: its own expired lease",
        leased("w1", At(-HOUR)),
        LEASE_KEYS,
        lease("renew"),
        ["ok", At(LEASE)],
        lease_to(RENEWED),
    ),
    *(
        Case(
            f"{mode}: another owner's {how} lease",
            leased("w2", until),
            LEASE_KEYS,
            lease(mode),
            ["held", "w2"],
        )
        for mode in ("renew", "release")
        for how, until in (("live", At(HOUR)), ("expired", At(-HOUR)))
    ),
    *(
        Case(f"{mode}: nobody's lease", FREE, LEASE_KEYS, lease(mode), ["held", ""])
        for mode in ("renew", "release")
    ),
    Case(
        "release: its own lease, kept off the re-drive list",
        leased("w1", At(HOUR)),
        LEASE_KEYS,
        lease("release"),
        ["ok", At(LEASE)],
        lease_to(RELEASED),
    ),
    Case(
        "acquire: names the worker and drops the announced next attempt",
        {RUN: changed(QUEUED, next_attempt="2026-01-01T00:00:00+00:00", lease_worker="h:1")},
        LEASE_KEYS,
        (*lease("acquire"), "h:2"),
        ACQUIRED,
        lease_to({RUN: changed(TAKEN[RUN], lease_worker="h:2")}),
    ),
    Case(
        "release: the worker's name goes with the lease",
        {**leased("w1", At(HOUR)), RUN: changed(leased("w1", At(HOUR))[RUN], lease_worker="h:1")},
        LEASE_KEYS,
        (*lease("release"), "h:1"),
        ["ok", At(LEASE)],
        lease_to(RELEASED),
    ),
]


@cases(RUN_LEASE)
def test_run_lease(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "run_lease", case)


# --- run_hold ------------------------------------------------------------------------------

HOLD_KEYS = (RUN,)
HOLD = 60_000
HELD_BY_RB = {RUN: changed(IN_GRACE, lease_owner="rb", lease_until_ms=At(HOLD))}
DONE = ["ok", ""]


def hold(owner: str, mode: str = "hold", state: str = "grace") -> tuple[Any, ...]:
    return (owner, HOLD, state, mode)


def holding(owner: str, until: At, state: str = "grace") -> dict[str, Any]:
    return {RUN: changed(IN_GRACE, state=state, lease_owner=owner, lease_until_ms=until)}


RUN_HOLD = [
    Case("hold: no record", {}, HOLD_KEYS, hold("rb"), ["state", ""]),
    Case(
        "hold: not in the state asked for",
        {RUN: changed(IN_GRACE, state="finalizing")},
        HOLD_KEYS,
        hold("rb"),
        ["state", "finalizing"],
    ),
    Case("hold: free", {RUN: IN_GRACE}, HOLD_KEYS, hold("rb"), DONE, HELD_BY_RB),
    Case(
        "hold: its own, renewed", holding("rb", At(HOUR)), HOLD_KEYS, hold("rb"), DONE, HELD_BY_RB
    ),
    Case(
        "hold: another's expired hold",
        holding("cli", At(-HOUR)),
        HOLD_KEYS,
        hold("rb"),
        DONE,
        HELD_BY_RB,
    ),
    Case(
        "hold: another's live hold",
        holding("cli", At(HOUR)),
        HOLD_KEYS,
        hold("rb"),
        ["held", "cli"],
    ),
    Case(
        "hold: in the other state asked for",
        {RUN: changed(IN_GRACE, state="needs_attention")},
        HOLD_KEYS,
        hold("rb", state="needs_attention"),
        DONE,
        holding("rb", At(HOLD), "needs_attention"),
    ),
    Case(
        "unhold: by the holder",
        holding("rb", At(HOUR)),
        HOLD_KEYS,
        hold("rb", "unhold"),
        DONE,
        {RUN: IN_GRACE},
    ),
    Case(
        "unhold: by another, a no-op",
        holding("cli", At(HOUR)),
        HOLD_KEYS,
        hold("rb", "unhold"),
        DONE,
    ),
    Case("unhold: not held, a no-op", {RUN: IN_GRACE}, HOLD_KEYS, hold("rb", "unhold"), DONE),
    Case(
        "unhold: not in the state asked for",
        holding("rb", At(HOUR), "finalizing"),
        HOLD_KEYS,
        hold("rb", "unhold"),
        ["state", "finalizing"],
    ),
]


@cases(RUN_HOLD)
def test_run_hold(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "run_hold", case)


# --- lease_claim_expired, due_claim, due_complete ------------------------------------------

OVERDUE = Zset({"a": At(-HOUR), "b": At(-2 * HOUR), "c": At(HOUR)})


def claim_table(key: str, claimed: Any) -> list[Case]:
    """The cases of a script that claims a sorted set's entries due by Redis's clock for a lease
    (``claimed`` shapes the reply from the ids claimed and the lease's end)."""
    return [
        Case("nothing there", {}, (key,), (LEASE, 10), []),
        Case("nothing due", {key: Zset({"c": At(HOUR)})}, (key,), (LEASE, 10), []),
        Case(
            "the due ones, oldest first, each held off for a lease",
            {key: OVERDUE},
            (key,),
            (LEASE, 10),
            claimed("b", "a"),
            {key: Zset({"a": At(LEASE), "b": At(LEASE), "c": At(HOUR)})},
        ),
        Case(
            "at most the limit",
            {key: OVERDUE},
            (key,),
            (LEASE, 1),
            claimed("b"),
            {key: Zset({"a": At(-HOUR), "b": At(LEASE), "c": At(HOUR)})},
        ),
    ]


LEASE_CLAIM_EXPIRED = claim_table(LEASES, lambda *ids: list(ids))
DUE_CLAIM = claim_table(DUE, lambda *ids: [x for i in ids for x in (i, At(LEASE))])
DUE_COMPLETE = [
    Case(
        "its claim still holds: removed",
        {DUE: Zset({RID: 5000, OTHER: 5000})},
        (DUE,),
        (RID, 5000),
        1,
        {DUE: Zset({OTHER: 5000})},
    ),
    Case("the last entry: removed", {DUE: Zset({RID: 5000})}, (DUE,), (RID, 5000), 1, {DUE: None}),
    Case("claimed again or rescheduled: left", {DUE: Zset({RID: 9000})}, (DUE,), (RID, 5000), 0),
    Case("gone", {DUE: Zset({OTHER: 5000})}, (DUE,), (RID, 5000), 0),
]


@cases(LEASE_CLAIM_EXPIRED)
def test_lease_claim_expired(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "lease_claim_expired", case)


@cases(DUE_CLAIM)
def test_due_claim(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "due_claim", case)


@cases(DUE_COMPLETE)
def test_due_complete(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "due_complete", case)


# --- claim_release_stale -------------------------------------------------------------------

STALE = (ACTIVE, RUN0)
CLAIM_RELEASE_STALE = [
    Case("the claim gone", {RUN0: {"state": "done"}}, STALE, (OTHER,), 0),
    Case(
        "the claim now another run's", {ACTIVE: "r2", RUN0: {"state": "done"}}, STALE, (OTHER,), 0
    ),
    *(
        Case(
            f"the holder alive ({state})",
            {ACTIVE: OTHER, RUN0: {"state": state}},
            STALE,
            (OTHER,),
            0,
        )
        for state in sorted(str(s) for s in ACTIVE_STATES)
    ),
    *(
        Case(
            f"the holder ended ({state})",
            {ACTIVE: OTHER, RUN0: {"state": state}},
            STALE,
            (OTHER,),
            1,
            {ACTIVE: None},
        )
        for state in TERMINAL
    ),
    Case("the holder's record gone", {ACTIVE: OTHER}, STALE, (OTHER,), 1, {ACTIVE: None}),
    Case(
        "the holder's record without a state",
        {ACTIVE: OTHER, RUN0: {"path": PATH}},
        STALE,
        (OTHER,),
        1,
        {ACTIVE: None},
    ),
]


@cases(CLAIM_RELEASE_STALE)
def test_claim_release_stale(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "claim_release_stale", case)


# --- pending_republish ---------------------------------------------------------------------

EID = "e1"
PENDING, MESSAGES, PUBLISHES = keys.PENDING, keys.PENDING_MESSAGES, keys.PENDING_PUBLISHES
QUEUE, UNACKED = keys.TASK_QUEUE, keys.BROKER_UNACKED


def message(tag: str) -> str:
    """A task message as kombu stores it, to the fields the scripts read."""
    return json.dumps({"body": tag, "properties": {"delivery_tag": tag}})


OLD, FRESH, ELSE = message("tag-old"), message("tag-new"), message("tag-else")
REPUBLISH = (PENDING, MESSAGES, PUBLISHES, QUEUE, UNACKED)
LOST = {
    PENDING: Zset({EID: 1000, "e0": 1000}),
    MESSAGES: {EID: OLD, "e0": ELSE},
    QUEUE: [ELSE],
    UNACKED: {"tag-else": ELSE},
}
BUMPED = {PENDING: Zset({EID: 5000, "e0": 1000})}


def republish(may: str = "1") -> tuple[Any, ...]:
    return (EID, 1000, FRESH, 5000, may)


def published(count: str, **state: Any) -> dict[str, Any]:
    return {PUBLISHES: {EID: count}, QUEUE: [FRESH, ELSE], **BUMPED, **state}


PENDING_REPUBLISH = [
    Case(
        "gone",
        {MESSAGES: {"e0": ELSE}, PENDING: Zset({"e0": 1000})},
        REPUBLISH,
        republish(),
        "gone",
    ),
    Case("raced", {**LOST, PENDING: Zset({EID: 2000})}, REPUBLISH, republish(), "raced"),
    Case(
        "waiting: queued", {**LOST, QUEUE: [ELSE, OLD]}, REPUBLISH, republish(), "waiting", BUMPED
    ),
    Case(
        "waiting: queued at the head",
        {**LOST, QUEUE: [OLD, ELSE, ELSE]},
        REPUBLISH,
        republish(),
        "waiting",
        BUMPED,
    ),
    Case(
        "waiting: held by a worker (kombu's unacked hash)",
        {**LOST, UNACKED: {"tag-else": ELSE, "tag-old": OLD}},
        REPUBLISH,
        republish(),
        "waiting",
        BUMPED,
    ),
    Case("lost, no publishes left", LOST, REPUBLISH, republish("0"), "lost"),
    Case(
        "lost: published",
        LOST,
        REPUBLISH,
        republish(),
        "published",
        published("1", **{MESSAGES: {EID: FRESH, "e0": ELSE}}),
    ),
    Case(
        "lost again: published, counted",
        {**LOST, PUBLISHES: {EID: "2"}},
        REPUBLISH,
        republish(),
        "published",
        published("3", **{MESSAGES: {EID: FRESH, "e0": ELSE}}),
    ),
    Case(
        "lost with no queue and no unacked hash: published",
        {PENDING: LOST[PENDING], MESSAGES: LOST[MESSAGES]},
        REPUBLISH,
        republish(),
        "published",
        {PUBLISHES: {EID: "1"}, QUEUE: [FRESH], MESSAGES: {EID: FRESH, "e0": ELSE}, **BUMPED},
    ),
    Case(
        "no message kept: published",
        {**LOST, MESSAGES: {"e0": ELSE}},
        REPUBLISH,
        republish(),
        "published",
        published("1", **{MESSAGES: {EID: FRESH, "e0": ELSE}}),
    ),
    Case(
        "no message kept, no publishes left: lost",
        {**LOST, MESSAGES: {"e0": ELSE}},
        REPUBLISH,
        republish("0"),
        "lost",
    ),
]


@cases(PENDING_REPUBLISH)
def test_pending_republish(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "pending_republish", case)


# --- event_publish, event_record -----------------------------------------------------------

CLAIM = keys.event(EID)
WEEK = 604_800
PUBLISH = (CLAIM, QUEUE, PENDING, MESSAGES)
MSG = message("tag-1")
PUBLISH_ARGS = ("task-1", WEEK, MSG, EID, 5000)
EARLIER = {QUEUE: [ELSE], PENDING: Zset({"e0": 1000}), MESSAGES: {"e0": ELSE}}
WRONG_TYPE = Fails("WRONGTYPE")

EVENT_PUBLISH = [
    Case(
        "fresh: claimed, pending, pushed",
        {},
        PUBLISH,
        PUBLISH_ARGS,
        [1, "task-1"],
        {
            CLAIM: Expiring("task-1", WEEK),
            QUEUE: [MSG],
            PENDING: Zset({EID: 5000}),
            MESSAGES: {EID: MSG},
        },
    ),
    Case(
        "fresh, beside earlier events",
        EARLIER,
        PUBLISH,
        PUBLISH_ARGS,
        [1, "task-1"],
        {
            CLAIM: Expiring("task-1", WEEK),
            QUEUE: [MSG, ELSE],
            PENDING: Zset({"e0": 1000, EID: 5000}),
            MESSAGES: {"e0": ELSE, EID: MSG},
        },
    ),
    Case(
        "duplicate: nothing written",
        {**EARLIER, CLAIM: Expiring("task-0", 3600)},
        PUBLISH,
        PUBLISH_ARGS,
        [0, "task-0"],
    ),
    Case("rollback: the push fails", {**EARLIER, QUEUE: "x"}, PUBLISH, PUBLISH_ARGS, WRONG_TYPE),
    Case(
        "rollback: the pending entry fails",
        {**EARLIER, PENDING: "x"},
        PUBLISH,
        PUBLISH_ARGS,
        WRONG_TYPE,
    ),
    Case(
        "rollback: the message fails",
        {**EARLIER, MESSAGES: "x"},
        PUBLISH,
        PUBLISH_ARGS,
        WRONG_TYPE,
    ),
]

HISTORY = keys.history(PATH)
RECORD = (CLAIM, HISTORY)
ENTRY = {"event": "skipped", "rotation_id": RID}
EARLIER_ENTRY = {"event": "due"}


def record(*fields: str, maxlen: Any = 500) -> tuple[Any, ...]:
    return ("recorded", WEEK, maxlen, *fields)


ENTRY_ARGS = record(*(x for kv in ENTRY.items() for x in kv))

EVENT_RECORD = [
    Case(
        "fresh: claimed, recorded in a stream that expires with the claim",
        {},
        RECORD,
        ENTRY_ARGS,
        [1, "recorded"],
        {CLAIM: Expiring("recorded", WEEK), HISTORY: Expiring(Stream([ENTRY]), WEEK)},
    ),
    Case(
        "fresh, after the engine's entries: the stream is kept",
        {HISTORY: Stream([EARLIER_ENTRY])},
        RECORD,
        ENTRY_ARGS,
        [1, "recorded"],
        {CLAIM: Expiring("recorded", WEEK), HISTORY: Stream([EARLIER_ENTRY, ENTRY])},
    ),
    Case(
        "fresh, after earlier events only: the stream's expiry starts again",
        {HISTORY: Expiring(Stream([EARLIER_ENTRY]), 60)},
        RECORD,
        ENTRY_ARGS,
        [1, "recorded"],
        {
            CLAIM: Expiring("recorded", WEEK),
            HISTORY: Expiring(Stream([EARLIER_ENTRY, ENTRY]), WEEK),
        },
    ),
    Case(
        "duplicate: nothing written",
        {CLAIM: Expiring("recorded", 3600), HISTORY: Stream([EARLIER_ENTRY])},
        RECORD,
        ENTRY_ARGS,
        [0, "recorded"],
    ),
    Case("rollback: a history of the wrong type", {HISTORY: "x"}, RECORD, ENTRY_ARGS, WRONG_TYPE),
    Case(
        "rollback: a max length that is no number",
        {HISTORY: Stream([EARLIER_ENTRY])},
        RECORD,
        record("event", "skipped", maxlen="many"),
        Fails("not an integer"),
    ),
    Case(
        "rollback: a field without a value",
        {HISTORY: Stream([EARLIER_ENTRY])},
        RECORD,
        record("event"),
        Fails("wrong number of arguments"),
    ),
]


@cases(EVENT_PUBLISH)
def test_event_publish(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "event_publish", case)


@cases(EVENT_RECORD)
def test_event_record(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "event_record", case)


# --- slot_acquire, slot_renew, slot_wait, slot_release (target budgets) ----------------------

SLOTS, SLOT_WAITERS = keys.slots("db:5432"), keys.slot_waiters("db:5432")
TAKE = (SLOTS, SLOT_WAITERS, DUE, RUN)
LINE = (SLOTS, SLOT_WAITERS, DUE)
HELD_SLOT = Expiring(Zset({"h1": At(LEASE)}), LEASE // 1000)
WAITING_RUN = {"state": "queued", "path": PATH, "slot_wait": "db:5432"}
SLOT_ACQUIRE = [
    Case("a free slot: taken", {}, TAKE, ("h1", 2, LEASE, RID, 0), 1, {SLOTS: HELD_SLOT}),
    Case(
        "every slot taken: refused, nothing written",
        {SLOTS: Zset({"a": At(HOUR), "b": At(HOUR)})},
        TAKE,
        ("h1", 2, LEASE, RID, 0),
        0,
    ),
    Case(
        "a holder whose lease passed is dropped: its slot is taken",
        {SLOTS: Zset({"dead": At(-1000), "b": At(HOUR)})},
        TAKE,
        ("h1", 2, LEASE, RID, 0),
        1,
        {SLOTS: Expiring(Zset({"b": At(HOUR), "h1": At(LEASE)}), LEASE // 1000)},
    ),
    Case(
        "the holder again: renewed, no second slot",
        {SLOTS: Zset({"h1": At(1000), "b": At(HOUR)})},
        TAKE,
        ("h1", 2, LEASE, RID, 0),
        1,
        {SLOTS: Expiring(Zset({"h1": At(LEASE), "b": At(HOUR)}), LEASE // 1000)},
    ),
    Case(
        "a waiter before grace takes one: its wait and due entry end",
        {
            SLOT_WAITERS: Zset({RID: At(-5000), OTHER: At(-1000)}),
            DUE: Zset({RID: At(1000), OTHER: At(2000)}),
            RUN: WAITING_RUN,
        },
        TAKE,
        ("h1", 1, LEASE, RID, 1),
        1,
        {
            SLOTS: HELD_SLOT,
            SLOT_WAITERS: Zset({OTHER: At(-1000)}),
            DUE: Zset({OTHER: At(2000)}),
            RUN: changed(WAITING_RUN, slot_wait=None),
        },
    ),
    Case(
        "a finalize takes one: its due entry stays (removed when it is done)",
        {SLOT_WAITERS: Zset({RID: At(-5000)}), DUE: Zset({RID: At(1000)}), RUN: WAITING_RUN},
        TAKE,
        ("h1", 1, LEASE, RID, 0),
        1,
        {SLOTS: HELD_SLOT, SLOT_WAITERS: None, RUN: changed(WAITING_RUN, slot_wait=None)},
    ),
]
SLOT_RENEW = [
    Case(
        "held: renewed",
        {SLOTS: Zset({"h1": At(1000)})},
        (SLOTS,),
        ("h1", LEASE),
        1,
        {SLOTS: HELD_SLOT},
    ),
    Case(
        "not held (dropped after its lease): 0",
        {SLOTS: Zset({"b": At(1000)})},
        (SLOTS,),
        ("h1", LEASE),
        0,
    ),
]
SLOT_WAIT = [
    Case(
        "every slot taken: waits, due after the first delay",
        {SLOTS: Zset({"a": At(HOUR)})},
        LINE,
        (RID, 1, 1500, LEASE, 300_000, 300_000),
        ["waiting", At(1500)],
        {SLOT_WAITERS: Zset({RID: At()}), DUE: Zset({RID: At(1500)})},
    ),
    Case(
        "a slot came free meanwhile: due at once, claimed for the caller",
        {},
        LINE,
        (RID, 1, 1500, LEASE, 300_000, 300_000),
        ["free", At(300_000)],
        {SLOT_WAITERS: Zset({RID: At()}), DUE: Zset({RID: At(300_000)})},
    ),
    Case(
        "third in line: a delay per place, plus a quarter of its wait (at most the growth)",
        {
            SLOTS: Zset({"a": At(HOUR)}),
            SLOT_WAITERS: Zset({"w1": At(-9000), "w2": At(-8000), RID: At(-4000)}),
        },
        LINE,
        (RID, 1, 1000, 500, 300_000, 300_000),
        ["waiting", At(3500)],
        {DUE: Zset({RID: At(3500)})},
    ),
    Case(
        "the longest delay caps it",
        {SLOTS: Zset({"a": At(HOUR)}), SLOT_WAITERS: Zset({"w1": At(-9000), RID: At(-4000)})},
        LINE,
        (RID, 1, 5000, 500, 300_000, 2000),
        ["waiting", At(2000)],
        {DUE: Zset({RID: At(2000)})},
    ),
]
SLOT_RELEASE = [
    Case(
        "no waiter: the slot is free",
        {SLOTS: Zset({"h1": At(HOUR), "b": At(HOUR)})},
        LINE,
        ("h1", 300_000),
        None,
        {SLOTS: Zset({"b": At(HOUR)})},
    ),
    Case(
        "the oldest waiter is woken: its due entry claimed",
        {
            SLOTS: Zset({"h1": At(HOUR)}),
            SLOT_WAITERS: Zset({RID: At(-5000), OTHER: At(-1000)}),
            DUE: Zset({RID: At(1000), OTHER: At(500)}),
        },
        LINE,
        ("h1", 300_000),
        [RID, At(300_000)],
        {
            SLOTS: None,
            SLOT_WAITERS: Zset({OTHER: At(-1000)}),
            DUE: Zset({RID: At(300_000), OTHER: At(500)}),
        },
    ),
    Case(
        "a waiter whose run ended (no due entry) is skipped",
        {SLOT_WAITERS: Zset({"gone": At(-9000), RID: At(-5000)}), DUE: Zset({RID: At(1000)})},
        LINE,
        ("h1", 300_000),
        [RID, At(300_000)],
        {SLOT_WAITERS: None, DUE: Zset({RID: At(300_000)})},
    ),
]


@cases(SLOT_ACQUIRE)
def test_slot_acquire(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "slot_acquire", case)


@cases(SLOT_RENEW)
def test_slot_renew(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "slot_renew", case)


@cases(SLOT_WAIT)
def test_slot_wait(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "slot_wait", case)


@cases(SLOT_RELEASE)
def test_slot_release(redis_client: redis.Redis, case: Case) -> None:
    check(redis_client, "slot_release", case)


@contextmanager
def out_of_memory(client: redis.Redis) -> Iterator[None]:
    """Redis over its ``maxmemory`` (1 byte), ``noeviction``: a script's first write is refused."""
    saved = client.config_get("maxmemory*")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        client.config_set("maxmemory", saved["maxmemory"])
        client.config_set("maxmemory-policy", saved["maxmemory-policy"])


@pytest.mark.parametrize(
    ("script", "before", "script_keys", "args"),
    [
        ("event_publish", EARLIER, PUBLISH, PUBLISH_ARGS),
        ("event_record", {HISTORY: Stream([EARLIER_ENTRY])}, RECORD, ENTRY_ARGS),
    ],
)
def test_out_of_memory_refuses_the_claim_and_writes_nothing(
    redis_client: redis.Redis,
    script: str,
    before: Mapping[str, Any],
    script_keys: Sequence[str],
    args: Sequence[Any],
) -> None:
    """An OOM refuses the claim (the script's first write). Redis lets a script that has written
    write on, so OOM never reaches the rollback: the wrong-type cases above do."""
    write(redis_client, before)
    run = scripts.register(redis_client, script)
    with out_of_memory(redis_client), pytest.raises(redis.exceptions.OutOfMemoryError):
        run(keys=list(script_keys), args=list(args))
    assert read(redis_client) == before


def test_every_script_has_a_table() -> None:
    lua = resources.files("orchestrator.state").joinpath("lua")
    names = {p.name.removesuffix(".lua") for p in lua.iterdir() if p.name.endswith(".lua")}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert names - {"prelude"} <= tested
