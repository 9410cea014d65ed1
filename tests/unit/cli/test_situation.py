"""The hint graph: from every state of a path's last run, every ``next:`` step names a command
that the same table allows in that state, so following a hint never ends in a refusal."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.cli.situation import (
    COMMANDS,
    Situation,
    next_steps,
    progress,
    refusal,
)
from orchestrator.state.records import RunRecord, RunState
from orchestrator.state.strays import Stray

PATH = "apps/orders/db"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LATER = (NOW + timedelta(hours=1)).isoformat()
EARLIER = (NOW - timedelta(hours=1)).isoformat()
COMMAND = re.compile(r"`(rotate|retry|cancel|finalize|rollback|status|history|acknowledge)"
                     r" " + re.escape(PATH) + r"( --now)?`")  # fmt: skip


def variants() -> list[RunRecord | None]:
    """A run in every state, with what changes the answers: stored or not, sealed, grace over
    or not, held by a rollback, waiting for consumers, retrying."""
    base = RunRecord(rotation_id="r1", path=PATH, state="queued", from_version=3)
    out: list[RunRecord | None] = [None]
    for state in RunState:
        record = replace(base, state=state)
        out.append(record)
        out.append(replace(record, new_version=4, finalize_after=EARLIER))
        out.append(replace(record, new_version=4, finalize_after=LATER))
        out.append(replace(record, sealed=True))
        out.append(replace(record, sealed=True, may_be_applied=True))
        out.append(replace(record, write_sent=True))  # began a write that may still land
        out.append(replace(record, new_version=4, lease_owner="rollback:x", lease_until=LATER))
        out.append(replace(record, new_version=4, waiting="2 sessions of app_a"))
        out.append(replace(record, next_attempt=LATER, attempts=2, last_error="boom"))
    return out


SITUATIONS = [
    Situation(record, routed=routed, now=NOW, strays=strays)
    for record, routed, strays in itertools.product(
        variants(), (True, False), ((), (Stray(PATH, "r0", "a pair is still valid", EARLIER),))
    )
]


def _name(situation: Situation) -> str:
    record = situation.record
    return f"{record.state if record else 'none'}-{situation.routed}-{len(situation.strays)}"


@pytest.mark.parametrize("situation", SITUATIONS, ids=_name)
def test_every_hint_names_a_command_allowed_in_that_state(situation: Situation) -> None:
    steps = next_steps(situation, PATH)
    assert steps, "on-call always gets somewhere to go"
    for step in steps:
        for command, now in COMMAND.findall(step):
            name = command + now
            if name in COMMANDS:
                assert refusal(situation, name) is None, (step, refusal(situation, name))
            elif command == "acknowledge":
                assert situation.strays, step
        if "routing file" in step:
            assert not situation.routed


def test_what_each_state_offers() -> None:
    def offers(record: RunRecord | None, routed: bool = True) -> str:
        return " | ".join(next_steps(Situation(record, routed=routed, now=NOW), PATH))

    run = RunRecord(rotation_id="r1", path=PATH, state="storing", from_version=3)
    assert offers(run) == f"`status {PATH}` shows its progress; it goes on by itself"
    assert "`cancel" in offers(replace(run, state="minting"))
    sent = replace(run, state="needs_attention", write_sent=True)
    assert "`cancel" not in offers(sent)
    assert "may still land" in (refusal(Situation(sent, routed=True, now=NOW), "cancel") or "")
    grace = replace(run, state="grace", new_version=4, finalize_after=LATER)
    assert offers(grace) == (
        f"`finalize {PATH} --now` ends grace early | `rollback {PATH}` undoes the rotation"
    )
    assert offers(replace(grace, finalize_after=EARLIER)).startswith(f"`finalize {PATH}` ")
    attention = replace(run, state="needs_attention", new_version=4)
    assert offers(attention) == f"fix the cause, then `retry {PATH}`"
    assert "`finalize apps/orders/db --now`" in offers(replace(attention, waiting="1 session"))
    assert offers(None, routed=False).startswith("add a [[rules]] entry")
    assert offers(replace(run, state="done"), routed=False).startswith("add a [[rules]]")


def test_progress_says_a_failing_store_is_being_retried_and_when_next() -> None:
    run = RunRecord(
        rotation_id="r1", path=PATH, state="storing", step="store", attempts=2, attempts_max=5,
        last_error="ScaiVault PUT answered 503 (service_unavailable)",
        next_attempt=(NOW + timedelta(seconds=30)).isoformat(), lease_until=EARLIER,
    )  # fmt: skip
    lines = progress(Situation(run, now=NOW))
    assert lines[0] == (
        "retrying: attempt 2 of 5 failed (ScaiVault PUT answered 503 (service_unavailable)); "
        "the next attempt is at 2026-12-02T12:00:30+00:00 (in 30s)"
    )
    leased = replace(run, next_attempt=None, lease_until=LATER, lease_worker="host:42")
    assert progress(Situation(leased, now=NOW)) == [
        "failing: the write to ScaiVault is failing and being retried (attempt 2 of 5): "
        "ScaiVault PUT answered 503 (service_unavailable)",
        "held by worker host:42 until 2026-12-02T13:00:00+00:00",
    ]


def test_progress_after_a_rollback_names_the_restored_version_and_a_stray() -> None:
    run = RunRecord(
        rotation_id="r1", path=PATH, state="rolled_back", from_version=3, new_version=4,
        restored_version=5, last_error="the new credential (version 4) is still valid",
    )  # fmt: skip
    stray = Stray(PATH, "r1", "the new credential (version 4) is still valid", EARLIER, 4)
    lines = progress(Situation(run, now=NOW, strays=(stray,)))
    assert lines[0].startswith("rolled back: ScaiVault holds version 5 with the data of version 3")
    assert lines[-1].startswith("left valid at the target since ")
    assert next_steps(Situation(run, now=NOW, strays=(stray,)), PATH)[0].endswith(
        f"`acknowledge {PATH}`"
    )


def test_progress_says_a_run_waits_for_a_slot_of_its_target() -> None:
    run = RunRecord(
        rotation_id="r1", path=PATH, state="queued", attempts=0, lease_until=LATER,
        slot_wait="orders-db.internal:5432",
    )  # fmt: skip
    assert progress(Situation(run, now=NOW)) == [
        "waiting for a slot of target orders-db.internal:5432: its concurrency budget "
        "(max_concurrent) is in use; it goes on when a slot frees, holding no worker meanwhile"
    ]
