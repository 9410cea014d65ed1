"""The run store against a real Redis: the Lua check-and-set scripts, leases and path claims."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis

from orchestrator.errors import IllegalTransition, LeaseLost, PathBusy, RunNotFound
from orchestrator.state import keys
from orchestrator.state.records import ACTIVE, RunRecord
from orchestrator.state.runs import RunStore
from orchestrator.state.transition import Sealed

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_client: redis.Redis) -> RunStore:
    return RunStore(redis_client)


def wait_for_expired(store: RunStore, timeout: float = 10.0) -> list[str]:
    """Claim expired leases (held off 60 s), polling until one has expired."""
    deadline = time.monotonic() + timeout
    while not (claimed := store.claim_expired(lease_seconds=60)):
        assert time.monotonic() < deadline, f"no lease expired within {timeout}s"
        time.sleep(0.01)
    return claimed


def _new(store: RunStore, rid: str = "r1", path: str = "a/b", state: str = "queued") -> RunRecord:
    return store.create(
        RunRecord(
            rotation_id=rid, path=path, state=state, rotator="random-password", from_version=3
        )
    )


def test_create_claims_path_and_reads_back(store: RunStore) -> None:
    record = _new(store)
    assert record.state == "queued" and record.from_version == 3 and record.attempts == 0
    assert record.created_at and record.updated_at and not record.sealed
    assert store.active("a/b") == record
    assert store.last("a/b") == record
    assert store.get("nope") is None
    with pytest.raises(RunNotFound):
        store.require("nope")


def test_second_active_rotation_on_a_path_is_refused(store: RunStore) -> None:
    _new(store, "r1")
    with pytest.raises(PathBusy) as info:
        _new(store, "r2")
    assert info.value.holder == "r1"
    skipped = _new(store, "r2", state="skipped")  # terminal records do not claim
    assert skipped.state == "skipped"
    assert store.active("a/b").rotation_id == "r1"  # type: ignore[union-attr]
    assert store.last("a/b").rotation_id == "r2"  # type: ignore[union-attr]


def test_duplicate_create_is_refused_with_the_existing_state(store: RunStore) -> None:
    _new(store)
    with pytest.raises(IllegalTransition) as info:
        _new(store)
    assert info.value.state == "queued"


def test_legal_and_illegal_transitions(store: RunStore) -> None:
    _new(store)
    assert store.transition("r1", "minting", step="mint").state == "minting"
    with pytest.raises(IllegalTransition) as info:
        store.transition("r1", "done")
    assert info.value.state == "minting"
    store.transition("r1", "cancelled", actor="alice", reason="change freeze")
    with pytest.raises(IllegalTransition):
        store.transition("r1", "minting")
    assert store.active("a/b") is None, "a terminal state frees the path"
    _new(store, "r2")  # so a new rotation can start


def test_expect_narrows_the_allowed_sources(store: RunStore) -> None:
    _new(store)
    with pytest.raises(IllegalTransition):
        store.transition("r1", "failed", expect=["storing"])
    assert store.transition("r1", "failed", expect=["queued"], last_error="x").last_error == "x"


def test_none_deletes_a_field_and_unknown_fields_are_refused(store: RunStore) -> None:
    _new(store)
    store.update("r1", last_error="boom")
    assert store.update("r1", last_error=None).last_error is None
    with pytest.raises(ValueError, match="password"):
        store.update("r1", password="hunter2")
    with pytest.raises(ValueError, match="state"):
        store.update("r1", state="done")


def test_lease_is_exclusive_until_it_expires(store: RunStore, redis_client: redis.Redis) -> None:
    _new(store)
    assert store.acquire_lease("r1", "w1", 60)
    assert not store.acquire_lease("r1", "w2", 10)
    assert store.acquire_lease("r1", "w1", 60), "the owner may take it again"
    with pytest.raises(LeaseLost):
        store.renew_lease("r1", "w2", 10)
    with pytest.raises(LeaseLost):
        store.transition("r1", "minting", owner="w2")
    store.transition("r1", "minting", owner="w1")
    assert store.claim_expired(lease_seconds=60) == [], "a live lease is not re-driven"
    store.renew_lease("r1", "w1", 0.001)  # the owner's last renewal; then it dies
    assert wait_for_expired(store) == ["r1"]
    assert store.claim_expired(lease_seconds=60) == [], "a claimed expiry is held off"
    assert store.acquire_lease("r1", "w2", 10), "an expired lease can be taken over"
    assert store.get("r1").attempts == 3  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        store.transition("r1", "applying", owner="w1")


def test_leaving_leased_states_drops_the_lease(store: RunStore, redis_client: redis.Redis) -> None:
    _new(store)
    store.acquire_lease("r1", "w1", 30)
    assert redis_client.zscore(keys.LEASES, "r1") is not None
    store.transition("r1", "minting", owner="w1")
    store.transition("r1", "storing", owner="w1")
    record = store.transition("r1", "grace", owner="w1", new_version=4)
    assert record.lease_owner is None and record.lease_until is None
    assert redis_client.zscore(keys.LEASES, "r1") is None
    assert not store.acquire_lease("r1", "w1", 30), "grace is not a leased state"


def test_release_keeps_the_run_off_the_redrive_list(store: RunStore) -> None:
    _new(store)
    store.acquire_lease("r1", "w1", 30)
    store.release_lease("r1", "w1", hold_seconds=30)
    assert store.claim_expired(lease_seconds=5) == []
    assert store.acquire_lease("r1", "w2", 30), "a released lease is free for the retried task"


def test_sealed_value_is_held_only_by_the_lease_owner(store: RunStore) -> None:
    _new(store)
    store.acquire_lease("r1", "w1", 30)
    store.transition("r1", "minting", owner="w1")
    with pytest.raises(LeaseLost):
        store.transition("r1", "applying", owner="w2", seal=Sealed("gAAAA-blob"))
    assert store.sealed("r1") is None
    record = store.transition("r1", "applying", owner="w1", seal=Sealed("gAAAA-blob"))
    assert record.sealed and store.sealed("r1") == "gAAAA-blob"
    assert store.may_be_applied("r1"), "an updater's seal may be in use at the target"
    assert "gAAAA" not in repr(record) and "gAAAA" not in str(record.to_dict())
    with pytest.raises(IllegalTransition, match="applied"):
        store.transition("r1", "cancelled", refuse_if_sealed=True)
    record = store.transition("r1", "verifying", sealed=None)
    assert not record.sealed and store.sealed("r1") is None


def test_retry_from_failed_reclaims_the_path(store: RunStore) -> None:
    _new(store)
    store.transition("r1", "failed", last_error="denied")
    _new(store, "r2")
    with pytest.raises(PathBusy):
        store.transition("r1", "queued")
    store.transition("r2", "cancelled")
    assert store.transition("r1", "queued").state == "queued"
    assert store.active("a/b").rotation_id == "r1"  # type: ignore[union-attr]


def test_stale_path_claim_of_a_lost_run_is_taken_over(
    store: RunStore, redis_client: redis.Redis
) -> None:
    redis_client.set(keys.active("a/b"), "gone")
    assert _new(store, "r1").state == "queued"


def test_list_filters_by_state_newest_first(store: RunStore) -> None:
    for n in range(5):
        _new(store, f"r{n}", path=f"p/{n}")
    time.sleep(0.005)  # the index is scored in ms: keep the updates apart
    store.transition("r1", "cancelled")
    time.sleep(0.005)
    store.transition("r3", "minting")
    assert [r.rotation_id for r in store.list(limit=2)] == ["r3", "r1"]
    assert {r.rotation_id for r in store.list(states=["queued"])} == {"r0", "r2", "r4"}
    assert all(r.state in ACTIVE for r in store.list(states=ACTIVE))


def test_acquire_returns_the_run_as_leased(store: RunStore) -> None:
    _new(store)
    record = store.acquire("r1", "w1", 30)
    assert record is not None and record.lease_owner == "w1" and record.attempts == 1
    assert store.acquire("r1", "w2", 30) is None, "held by w1"
    assert store.get("r1") == record


def test_create_returns_the_run_as_stored(store: RunStore) -> None:
    created = _new(store)
    assert created == store.get("r1")
    assert created.state == "queued" and created.created_at and created.path == "a/b"


def test_lookup_reads_a_run_and_the_path_holder_together(store: RunStore) -> None:
    assert store.lookup("r1", "a/b") == (None, None)
    first = _new(store)
    assert store.lookup("r1", "a/b") == (first, first)
    record, active = store.lookup("r2", "a/b")
    assert record is None and active == first
    store.transition("r1", "failed", last_error="denied")
    assert store.lookup("r1", "a/b") == (store.get("r1"), None), "a failed run holds nothing"


def test_a_minted_seal_is_reused_but_not_marked_as_applied(store: RunStore) -> None:
    _new(store)
    store.acquire("r1", "w1", 30)
    store.transition("r1", "minting", owner="w1")
    store.transition("r1", "verifying", owner="w1", seal=Sealed("gAAAA-m", in_place=False))
    assert store.sealed("r1") == "gAAAA-m" and not store.may_be_applied("r1")


def test_entering_grace_schedules_finalize_in_the_same_step(
    store: RunStore, redis_client: redis.Redis
) -> None:
    _new(store)
    store.acquire("r1", "w1", 30)
    with pytest.raises(LeaseLost):
        store.transition("r1", "grace", owner="w2", due_in=60)
    assert redis_client.zscore(keys.DUE, "r1") is None, "a refused transition schedules nothing"
    seconds, micros = redis_client.time()
    before_ms = seconds * 1000 + micros // 1000
    record = store.transition("r1", "grace", owner="w1", due_in=60)
    due = redis_client.zscore(keys.DUE, "r1")
    assert due is not None and before_ms + 60_000 <= due < before_ms + 70_000, "Redis's clock"
    assert record.finalize_after == datetime.fromtimestamp(due / 1000, UTC).isoformat(
        timespec="milliseconds"
    )
    redis_client.zadd(keys.DUE, {"r1": 99})  # the sweeper claimed it meanwhile
    store.transition("r1", "needs_attention", due_in=60)
    assert redis_client.zscore(keys.DUE, "r1") == 99, "an existing entry is kept"


def test_a_transition_counts_its_outcome_only_when_it_is_made(
    store: RunStore, redis_client: redis.Redis
) -> None:
    """A worker that lost its lease after storing does not count the run as stored again."""
    counter = ("svr:test:outcomes", "stored")
    _new(store)
    store.acquire("r1", "w1", 30)
    with pytest.raises(LeaseLost):
        store.transition("r1", "grace", owner="w2", count=counter)
    assert redis_client.hget(*counter) is None
    store.transition("r1", "grace", owner="w1", count=counter)
    with pytest.raises(IllegalTransition):
        store.transition("r1", "grace", owner="w1", count=counter, expect=("storing",))
    assert redis_client.hget(*counter) == "1"


def test_update_keeps_whatever_state_the_run_is_in(store: RunStore) -> None:
    _new(store)
    store.acquire("r1", "w1", 30)
    store.transition("r1", "minting", owner="w1")
    record = store.update("r1", owner="w1", mint_attempts=2)
    assert record.state == "minting" and record.mint_attempts == 2
    with pytest.raises(LeaseLost):
        store.update("r1", owner="w2", mint_attempts=3)
    with pytest.raises(RunNotFound):
        store.update("nope", mint_attempts=1)


def test_create_can_take_the_lease_in_the_same_step(
    store: RunStore, redis_client: redis.Redis
) -> None:
    record = store.create(RunRecord(rotation_id="r1", path="a/b", state="queued"), lease=("w1", 30))
    assert record.lease_owner == "w1" and record.attempts == 1
    assert redis_client.zscore(keys.LEASES, "r1") is not None, "the sweeper can re-drive it"
    assert store.acquire("r1", "w2", 30) is None
    skipped = store.create(
        RunRecord(rotation_id="r2", path="a/c", state="skipped"), lease=("w1", 30)
    )
    assert skipped.lease_owner is None, "an ended run is never leased"
    assert redis_client.zscore(keys.LEASES, "r2") is None
