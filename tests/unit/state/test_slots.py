"""The target semaphore's scripts on the real private Redis: the limit holds, expired leases come
back, re-acquiring renews, a release wakes the oldest waiter through the due-queue."""

from __future__ import annotations

import redis

from orchestrator.state import keys
from orchestrator.state.slots import Slots

TARGET = "db.internal:5432"


def fill(slots: Slots, count: int, lease: float = 30.0) -> None:
    for n in range(count):
        assert slots.acquire(TARGET, count, f"r{n}:rotate", lease, rotation_id=f"r{n}")


def test_the_limit_holds(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    fill(slots, 2)
    assert not slots.acquire(TARGET, 2, "r9:rotate", 30.0, rotation_id="r9")
    assert sorted(slots.holders(TARGET)) == ["r0:rotate", "r1:rotate"]


def test_reacquire_by_the_same_holder_renews_without_a_second_slot(
    redis_client: redis.Redis,
) -> None:
    slots = Slots(redis_client)
    fill(slots, 2)
    before = redis_client.zscore(keys.slots(TARGET), "r0:rotate")
    assert slots.acquire(TARGET, 2, "r0:rotate", 60.0, rotation_id="r0")
    assert len(slots.holders(TARGET)) == 2
    after = redis_client.zscore(keys.slots(TARGET), "r0:rotate")
    assert before is not None and after is not None and after > before


def test_an_expired_lease_gives_its_slot_back(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    assert slots.acquire(TARGET, 1, "dead:rotate", 30.0, rotation_id="dead")
    redis_client.zadd(keys.slots(TARGET), {"dead:rotate": 1})  # its lease passed long ago
    assert slots.acquire(TARGET, 1, "alive:rotate", 30.0, rotation_id="alive")
    assert slots.holders(TARGET) == ["alive:rotate"]
    assert not slots.renew(TARGET, "dead:rotate", 30.0)


def test_release_frees_the_slot(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    fill(slots, 1)
    assert slots.release(TARGET, "r0:rotate", 300.0) is None
    assert slots.holders(TARGET) == []
    assert slots.acquire(TARGET, 1, "r5:rotate", 30.0, rotation_id="r5")


def test_a_waiter_is_due_after_a_short_delay_and_woken_first_by_a_release(
    redis_client: redis.Redis,
) -> None:
    slots = Slots(redis_client)
    fill(slots, 1)
    for rid in ("w1", "w2"):
        woken = slots.wait(
            TARGET, 1, rid, delay=1.5, growth=30.0, longest=300.0, claim_seconds=300.0
        )
        assert woken is None
    now_ms = int(redis_client.time()[0]) * 1000
    due = redis_client.zscore(keys.DUE, "w1")
    assert due is not None and now_ms < due <= now_ms + 3000
    assert slots.waiters(TARGET) == ["w1", "w2"]
    wake = slots.release(TARGET, "r0:rotate", 300.0)
    assert wake is not None and wake.rotation_id == "w1"
    assert redis_client.zscore(keys.DUE, "w1") == wake.lease  # claimed, like the sweep's claims
    assert slots.waiters(TARGET) == ["w2"]


def test_taking_a_slot_ends_the_wait(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    redis_client.hset(keys.run("w1"), mapping={"state": "queued", "slot_wait": TARGET})
    fill(slots, 1)
    slots.wait(TARGET, 1, "w1", delay=1.0, growth=30.0, longest=300.0, claim_seconds=300.0)
    slots.release(TARGET, "r0:rotate", 300.0)
    assert slots.acquire(TARGET, 1, "w1:rotate", 30.0, rotation_id="w1", drop_due=True)
    assert redis_client.zscore(keys.DUE, "w1") is None
    assert redis_client.hget(keys.run("w1"), "slot_wait") is None
    assert slots.waiters(TARGET) == []


def test_a_waiter_whose_run_ended_is_not_woken(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    fill(slots, 1)
    for rid in ("gone", "w2"):
        slots.wait(TARGET, 1, rid, delay=1.0, growth=30.0, longest=300.0, claim_seconds=300.0)
    redis_client.zrem(keys.DUE, "gone")  # its run was cancelled and its entry finished
    wake = slots.release(TARGET, "r0:rotate", 300.0)
    assert wake is not None and wake.rotation_id == "w2"


def test_waiting_when_a_slot_just_came_free_is_due_at_once(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    wake = slots.wait(TARGET, 1, "w1", delay=1.0, growth=30.0, longest=300.0, claim_seconds=300.0)
    assert wake is not None and wake.rotation_id == "w1"
    assert redis_client.zscore(keys.DUE, "w1") == wake.lease


def test_a_waiter_further_back_in_line_is_due_later(redis_client: redis.Redis) -> None:
    slots = Slots(redis_client)
    fill(slots, 2)
    for n in range(6):
        slots.wait(TARGET, 2, f"w{n}", delay=1.0, growth=30.0, longest=300.0, claim_seconds=300.0)
    due = [redis_client.zscore(keys.DUE, f"w{n}") or 0 for n in range(6)]
    assert due[1] - due[0] < 100, "the next two in line: the first delay"
    assert due[2] - due[0] >= 900 and due[4] - due[0] >= 1900, "one more delay per two ahead"
