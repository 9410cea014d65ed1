"""The run store's hold on a run in grace (what a rollback takes before it writes anything)."""

from __future__ import annotations

import pytest
import redis

from orchestrator.errors import IllegalTransition, RunHeld
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_client: redis.Redis) -> RunStore:
    return RunStore(redis_client)


def _in_grace(store: RunStore, rid: str = "g1") -> RunRecord:
    store.create(RunRecord(rotation_id=rid, path="a/b", state="queued", from_version=1))
    store.acquire_lease(rid, "worker", 30)
    store.transition(rid, "minting", owner="worker")
    return store.transition(rid, "grace", owner="worker", new_version=2, due_in=0)


def test_a_held_run_in_grace_cannot_be_finalized_by_anyone_else(store: RunStore) -> None:
    _in_grace(store)
    assert store.hold("g1", "rollback:1", 60) == "ok"
    assert store.hold("g1", "rollback:2", 60) == "held rollback:1"
    with pytest.raises(RunHeld) as info:
        store.transition("g1", "finalizing", expect=["grace"])
    assert isinstance(info.value, IllegalTransition)  # callers that stop on those stop here too
    with pytest.raises(RunHeld):
        store.update("g1", last_error="x")
    done = store.transition("g1", "rolled_back", expect=["grace"], owner="rollback:1")
    assert done.state == "rolled_back" and done.lease_owner is None


def test_unhold_frees_the_run_and_a_hold_needs_the_state(store: RunStore) -> None:
    _in_grace(store)
    store.hold("g1", "rollback:1", 60)
    store.unhold("g1", "someone-else")  # not theirs: nothing happens
    assert store.hold("g1", "rollback:2", 60).startswith("held")
    store.unhold("g1", "rollback:1")
    assert store.require("g1").lease_owner is None
    assert store.transition("g1", "finalizing", expect=["grace"]).state == "finalizing"
    assert store.hold("g1", "rollback:3", 60) == "state finalizing"


def test_an_expired_hold_no_longer_blocks(store: RunStore) -> None:
    _in_grace(store)
    assert store.hold("g1", "crashed-cli", 0) == "ok"  # expires at once
    assert store.hold("g1", "rollback:2", 60) == "ok"
    assert store.transition("g1", "finalizing", owner="rollback:2").state == "finalizing"
