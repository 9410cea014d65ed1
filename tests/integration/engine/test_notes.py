"""A rotation's notes in its run record, against a real Redis: lease-checked, kept for a resume."""

from __future__ import annotations

import pytest
import redis

from orchestrator.engine.notes import RunNotes
from orchestrator.errors import LeaseLost
from orchestrator.state import keys
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore
from rotators import PermanentError

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_client: redis.Redis) -> RunStore:
    return RunStore(redis_client)


def _leased(store: RunStore, owner: str = "worker-1") -> RunRecord:
    store.create(RunRecord(rotation_id="r1", path="a/b", state="queued", rotator="x"))
    leased = store.acquire("r1", owner, 30)
    assert leased is not None and leased.lease_owner == owner
    return leased


def test_a_note_is_kept_in_the_record_and_seen_by_a_resumed_worker(
    store: RunStore, redis_client: redis.Redis
) -> None:
    leased = _leased(store)
    notes = RunNotes(leased, store, leased.lease_owner)
    notes.put("staged_id", "0Sc1")
    assert notes.get("staged_id") == "0Sc1"  # at once, without a re-read
    assert redis_client.hget(keys.run("r1"), "note.staged_id") == "0Sc1"

    record = store.require("r1")
    assert record.notes == {"staged_id": "0Sc1"}
    assert record.to_dict()["notes"] == {"staged_id": "0Sc1"}
    assert record.state == "queued" and record.lease_owner == "worker-1"

    store.release_lease("r1", "worker-1", 0)  # the worker dies; another takes the run over
    resumed = store.acquire("r1", "worker-2", 30)
    assert resumed is not None
    again = RunNotes(resumed, store, resumed.lease_owner)
    assert again.get("staged_id") == "0Sc1"
    again.put("staged_key_sha256", "ab12")
    assert store.require("r1").notes == {"staged_id": "0Sc1", "staged_key_sha256": "ab12"}


def test_a_worker_that_lost_the_lease_cannot_write_a_note(store: RunStore) -> None:
    leased = _leased(store)
    store.release_lease("r1", "worker-1", 0)
    assert store.acquire("r1", "worker-2", 30) is not None
    with pytest.raises(LeaseLost):
        RunNotes(leased, store, leased.lease_owner).put("staged_id", "0Sc9")
    assert store.require("r1").notes == {}


def test_notes_are_read_only_outside_a_worker_and_checked(store: RunStore) -> None:
    leased = _leased(store)
    RunNotes(leased, store, leased.lease_owner).put("staged_id", "0Sc1")
    on_call = RunNotes(store.require("r1"))
    assert on_call.get("staged_id") == "0Sc1"
    with pytest.raises(PermanentError, match="no worker holds this rotation"):
        on_call.put("staged_id", "0Sc2")
    with pytest.raises(ValueError, match="note name"):
        RunNotes(leased, store, leased.lease_owner).put("Bad-Name", "v")
    with pytest.raises(ValueError, match="lease owner"):
        store.put_note("r1", "staged_id", "v", owner="")
    with pytest.raises(ValueError, match="not a settable run field"):
        store.update("r1", owner="worker-1", notes={"staged_id": "v"})
    assert store.require("r1").notes == {"staged_id": "0Sc1"}
