"""The run states' named sets: each is what its name says, by the transitions."""

from __future__ import annotations

from orchestrator.cli.trigger import STOP_STATES
from orchestrator.local.demo import END_STATES
from orchestrator.state.records import (
    ACTIVE,
    BEFORE_STORE,
    BOTH_VALID,
    PRE_GRACE,
    STORED,
    TERMINAL,
    TRANSITIONS,
    RunState,
)

S = RunState


def test_pre_grace_is_every_state_before_grace_that_may_enter_it() -> None:
    entering = {state for state, to in TRANSITIONS.items() if S.GRACE in to}
    assert entering - {S.FINALIZING, S.NEEDS_ATTENTION} == PRE_GRACE
    assert sorted(PRE_GRACE) == ["applying", "minting", "queued", "storing", "verifying"]
    assert BEFORE_STORE < PRE_GRACE


def test_both_valid_and_stored_follow_the_store() -> None:
    assert sorted(BOTH_VALID) == ["finalizing", "grace"]
    assert BOTH_VALID <= ACTIVE
    assert all(TRANSITIONS[state] & BOTH_VALID for state in PRE_GRACE)
    assert sorted(STORED) == ["done", "finalizing", "grace"]
    assert not STORED & PRE_GRACE


def test_the_sets_built_from_them_keep_their_states() -> None:
    ended = ["cancelled", "done", "failed", "needs_attention", "rolled_back", "skipped"]
    assert sorted(END_STATES) == ended
    assert sorted(STOP_STATES) == sorted([*ended, "grace"])
    assert TERMINAL < STOP_STATES
    assert all(state in STOP_STATES for state in ("grace", S.DONE))
