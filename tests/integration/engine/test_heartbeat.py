"""Lease heartbeats against a real Redis: one keeper thread per process renews every held lease."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis

from orchestrator.engine.lease import Heartbeat, LeaseKeeper
from orchestrator.local.processes import RedisServer
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore

pytestmark = pytest.mark.integration

LEASE = 0.6  # seconds: renewed every 0.2 s


def _leased(store: RunStore, rid: str, owner: str = "w1") -> None:
    store.create(RunRecord(rotation_id=rid, path=f"hb/{rid}", state="queued"), lease=(owner, LEASE))


def _wait(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_held_leases_are_renewed_by_one_thread_and_expire_once_released(
    redis_url: str,
) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    keeper = LeaseKeeper()
    _leased(store, "r1")
    _leased(store, "r2")
    threads = threading.active_count()
    with (
        Heartbeat(store, "r1", "w1", LEASE, keeper=keeper) as one,
        Heartbeat(store, "r2", "w1", LEASE, keeper=keeper) as two,
    ):
        time.sleep(3 * LEASE)  # three lease lengths: only renewals keep them
        assert not one.lost and not two.lost
        assert store.claim_expired(60) == []
        assert threading.active_count() == threads + 1, "one keeper thread for both"
    with Heartbeat(store, "r1", "w1", LEASE, keeper=keeper):
        assert threading.active_count() == threads + 1, "the same thread serves later runs"
    _wait(lambda: sorted(store.claim_expired(60)) == ["r1", "r2"])


def test_a_lease_taken_over_is_lost_and_no_longer_renewed(redis_url: str) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    keeper = LeaseKeeper()
    _leased(store, "r1")
    with Heartbeat(store, "r1", "w1", LEASE, keeper=keeper) as beat:
        time.sleep(LEASE * 1.5)  # w1's lease stays alive...
        assert store.acquire("r1", "w2", 30) is None
        store.release_lease("r1", "w1", 0)  # ...until it is handed over
        assert store.acquire("r1", "w2", 30) is not None
        _wait(lambda: beat.lost)
        time.sleep(LEASE)  # only lost leases held: the keeper waits without a deadline
        _leased(store, "r2")
        with Heartbeat(store, "r2", "w1", LEASE, keeper=keeper) as other:
            time.sleep(3 * LEASE)
            assert not other.lost, "the keeper thread still serves other leases"
    assert store.get("r1").lease_owner == "w2"  # type: ignore[union-attr]


def test_an_unexpected_renewal_error_loses_that_lease_only(redis_url: str) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    keeper = LeaseKeeper()
    _leased(store, "r1")
    _leased(store, "r2")

    class Broken(RunStore):
        def renew_lease(self, rotation_id: str, owner: str, seconds: float) -> None:
            raise ValueError("a bug")

    with (
        Heartbeat(Broken(store.client), "r1", "w1", LEASE, keeper=keeper) as broken,
        Heartbeat(store, "r2", "w1", LEASE, keeper=keeper) as fine,
    ):
        _wait(lambda: broken.lost)
        time.sleep(2 * LEASE)
        assert not fine.lost


def test_renewal_failures_are_retried_a_third_of_a_lease_later(
    own_redis: RedisServer, log_stream: Any
) -> None:
    client = redis.Redis.from_url(own_redis.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    store = RunStore(client)
    _leased(store, "r1")
    with Heartbeat(store, "r1", "w1", LEASE, keeper=LeaseKeeper()) as beat:
        own_redis.stop()
        time.sleep(LEASE * 2)
        assert beat.lost, "not renewed for a whole lease: lost"
    failures = log_stream.getvalue().count('"event": "lease_renew_failed"')
    assert 1 <= failures <= 8, f"{failures} attempts in {2 * LEASE}s: retried in a busy loop"


def _renew_in_child(redis_url: str, keeper: LeaseKeeper, out: Any) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    with Heartbeat(store, "r1", "child", LEASE, keeper=keeper) as beat:
        time.sleep(3 * LEASE)
        out.put(beat.lost)


def test_a_forked_child_starts_a_keeper_thread_of_its_own(redis_url: str) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    keeper = LeaseKeeper()
    _leased(store, "r0")
    with Heartbeat(store, "r0", "w1", LEASE, keeper=keeper):  # the parent's thread runs
        _leased(store, "r1", owner="child")
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_renew_in_child, args=(redis_url, keeper, out))
        child.start()
        lost = out.get(timeout=10)
        child.join(10)
    assert lost is False, "the child's lease was renewed by a thread in the child"
    assert child.exitcode == 0


def _keepers() -> int:
    return sum(t.name == "lease-keeper" for t in threading.enumerate())


def test_close_stops_the_keeper_thread(redis_url: str) -> None:
    store = RunStore(redis.Redis.from_url(redis_url))
    keeper, before = LeaseKeeper(), _keepers()
    _leased(store, "r1")
    with Heartbeat(store, "r1", "w1", LEASE, keeper=keeper):
        assert _keepers() == before + 1
    keeper.close()
    _wait(lambda: _keepers() == before)
