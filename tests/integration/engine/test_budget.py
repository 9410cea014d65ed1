"""Target budgets in the engine (in this process, real Redis, the ScaiVault emulator): a run
without a slot waits without spending attempts and runs once a slot frees; a released slot wakes
the oldest waiter; a vault-only rotator needs no slot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.cli.situation import Situation, progress
from orchestrator.engine.budget import Slot
from orchestrator.engine.core import Engine
from orchestrator.engine.rollback import RollbackRequest
from orchestrator.errors import LeaseLost, RetryLater
from orchestrator.routing import RoutingTable
from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest
from orchestrator.state.records import RunRecord
from orchestrator.state.slots import Slots, Wake
from orchestrator.vault.client import VaultClient
from tests.fixtures.engine import EngineHarness, InprocIssuer, InprocVaultOnly

pytestmark = pytest.mark.integration

TARGET = "db.budget.test:5432"
ROUTING = f"""
[[rules]]
match = "apps/**"
rotator = "test-inproc"
grace_period = "1h"
target = "{TARGET}"
max_concurrent = 1
"""


class Budgeted:
    """An engine whose routing gives every ``apps/**`` path one target with one slot; the runs
    it wakes are collected in ``woken`` (the worker's tasks would publish them)."""

    def __init__(
        self, harness: EngineHarness, rotator: InprocIssuer, routing_text: str = ROUTING
    ) -> None:
        self.harness = harness
        self.rotator = rotator
        self.woken: list[Wake] = []
        routing = RoutingTable.parse(routing_text, rotators={"test-inproc": rotator})
        self.engine = Engine(harness.settings, harness.client, VaultClient(harness.settings),
                             routing, wake=self.woken.append)  # fmt: skip
        self.slots = Slots(harness.client)

    def start(self, path: str, owner: str, cap: int | None = None) -> RunRecord:
        version = self.harness.emulator.put_secret(path, {"username": "app", "password": "old"})
        request = RotateRequest(path, from_version=version, max_concurrent=cap)
        record = self.engine.rotate(request, owner=owner)
        assert record is not None
        return record

    def due(self, rotation_id: str, owner: str, lease: int | None = None) -> RunRecord:
        """What the due entry's task does (sweep or wake): ``scaivault.finalize``."""
        record = self.engine.finalize(rotation_id, owner=owner, lease=lease)
        assert record is not None
        return record


@pytest.fixture
def budgeted(harness: EngineHarness) -> Iterator[Budgeted]:
    b = Budgeted(harness, harness.rotator)
    yield b
    b.engine.close()


def test_a_run_without_a_slot_waits_without_spending_attempts_and_runs_once_one_frees(
    budgeted: Budgeted,
) -> None:
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    waiting = budgeted.start("apps/budget/b", owner="t1")
    rid = waiting.rotation_id
    assert waiting.state == "queued" and waiting.slot_wait == TARGET
    assert waiting.attempts == 0 and not waiting.lease_owner
    assert budgeted.rotator.calls == [], "nothing touched the target"
    assert budgeted.harness.text.zscore(keys.DUE, rid) is not None, "re-queued via the due-queue"
    assert budgeted.slots.waiters(TARGET) == [rid]
    limit = budgeted.harness.settings.rotator_max_attempts
    for n in range(limit + 2):  # more re-checks than attempts allowed: waiting is not failing
        again = budgeted.due(rid, owner=f"t1-{n}")
        assert again.state == "queued" and again.slot_wait == TARGET and again.attempts == 0

    wake = budgeted.slots.release(TARGET, "other:rotate", 300.0)
    assert wake == Wake(rid, wake.lease if wake else 0)
    stored = budgeted.due(rid, owner="t2", lease=wake.lease if wake else None)
    assert stored.state == "grace" and stored.slot_wait is None
    assert budgeted.rotator.calls == ["mint", "verify"]
    assert budgeted.slots.holders(TARGET) == [], "given back after the steps"
    assert budgeted.slots.waiters(TARGET) == []
    due = budgeted.harness.text.zscore(keys.DUE, rid)
    now_ms = int(budgeted.harness.text.time()[0]) * 1000
    assert due is not None and due > now_ms + 3500 * 1000, "only the finalize entry, 1h ahead"


def test_a_batch_cap_lowers_the_target_budget_for_its_own_runs_only(
    harness: EngineHarness,
) -> None:
    """``rotate --prefix --concurrency 1`` on a target without a limit: the batch's runs wait
    while one slot of the target is taken, a run outside the batch goes on."""
    unlimited = ROUTING.replace("max_concurrent = 1\n", "")
    budgeted = Budgeted(harness, harness.rotator, unlimited)
    try:
        assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
        capped = budgeted.start("apps/budget/batch", owner="t1", cap=1)
        assert capped.max_concurrent == 1
        assert capped.state == "queued" and capped.slot_wait == TARGET
        free = budgeted.start("apps/budget/outside", owner="t2")
        assert free.state == "grace" and free.slot_wait is None
        budgeted.slots.release(TARGET, "other:rotate", 0.0)
        assert budgeted.due(capped.rotation_id, owner="t3").state == "grace"
    finally:
        budgeted.engine.close()


def test_a_long_wait_is_not_mistaken_for_a_dead_worker(budgeted: Budgeted) -> None:
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 300.0, rotation_id="other")
    waiting = budgeted.start("apps/budget/long-wait", owner="t1")
    rid = waiting.rotation_id
    budgeted.harness.client.zadd(keys.LEASES, {rid: 0})  # its lease index entry has passed
    swept = budgeted.engine.sweep()
    assert rid not in [r.rotation_id for r in swept.redrive], "its due entry brings it back"
    budgeted.harness.client.zrem(keys.DUE, rid)  # without one, it is re-driven as before
    budgeted.harness.client.zadd(keys.LEASES, {rid: 0})
    assert rid in [r.rotation_id for r in budgeted.engine.sweep().redrive]


def test_a_lapsed_slot_is_taken_again_or_stops_the_run(budgeted: Budgeted) -> None:
    """The keeper renews a slot with the run's lease; one that lapsed meanwhile (and was
    dropped) is taken again while a slot is free, else the run's lease counts as lost."""
    budgets = budgeted.engine.budgets
    slot = Slot(budgets, TARGET, "rot-lapsed:rotate:t1", 1, "rot-lapsed")
    budgets.renew(slot)  # lapsed and free: taken again
    assert budgeted.slots.holders(TARGET) == [slot.holder]
    budgeted.slots.release(TARGET, slot.holder, 0.0)
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    with pytest.raises(LeaseLost):
        budgets.renew(slot)
    assert budgeted.slots.holders(TARGET) == ["other:rotate"], "the limit held"


def test_a_waiter_whose_limit_was_lifted_goes_on_and_stops_waiting(budgeted: Budgeted) -> None:
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    rid = budgeted.start("apps/budget/lifted", owner="t1").rotation_id
    unlimited = ROUTING.replace("max_concurrent = 1\n", "")
    routing = RoutingTable.parse(unlimited, rotators={"test-inproc": budgeted.rotator})
    budgeted.engine.routing.adopt(routing)  # as a routing reload does
    stored = budgeted.due(rid, owner="t2")
    assert stored.state == "grace" and stored.slot_wait is None
    assert budgeted.slots.waiters(TARGET) == []
    due = budgeted.harness.text.zscore(keys.DUE, rid)
    now_ms = int(budgeted.harness.text.time()[0]) * 1000
    assert due is not None and due > now_ms + 3500 * 1000, "only the finalize entry, 1h ahead"


def test_a_released_slot_wakes_the_oldest_waiter(budgeted: Budgeted) -> None:
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    first = budgeted.start("apps/budget/first", owner="t1")
    second = budgeted.start("apps/budget/second", owner="t2")
    assert first.slot_wait == TARGET and second.slot_wait == TARGET
    budgeted.slots.release(TARGET, "other:rotate", 0.0)  # as a crashed holder's expiry would
    stored = budgeted.due(first.rotation_id, owner="t3")
    assert stored.state == "grace"
    assert [w.rotation_id for w in budgeted.woken] == [second.rotation_id]
    lease = budgeted.woken[0].lease
    assert budgeted.harness.text.zscore(keys.DUE, second.rotation_id) == lease, "claimed"
    assert budgeted.due(second.rotation_id, owner="t4", lease=lease).state == "grace"


def test_a_failing_run_gives_its_slot_back(budgeted: Budgeted) -> None:
    def boom(ctx: object) -> None:
        raise ValueError("mint broke")

    budgeted.rotator.mint_hook = boom
    failed = budgeted.start("apps/budget/fails", owner="t1")
    assert failed.state == "failed"
    assert budgeted.slots.holders(TARGET) == []


def test_a_vault_only_rotator_needs_no_slot(harness: EngineHarness) -> None:
    budgeted = Budgeted(harness, InprocVaultOnly())
    try:
        assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
        stored = budgeted.start("apps/budget/vault-only", owner="t1")
        assert stored.state == "grace" and stored.slot_wait is None
    finally:
        budgeted.engine.close()


def test_cancelling_a_waiting_run_clears_its_wait(budgeted: Budgeted) -> None:
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    waiting = budgeted.start("apps/budget/cancelled", owner="t1")
    store = budgeted.engine.store
    cancelled = store.transition(waiting, "cancelled", last_error="cancelled by on-call")
    assert cancelled.slot_wait is None
    assert budgeted.due(waiting.rotation_id, owner="t2").state == "cancelled"
    assert budgeted.harness.text.zscore(keys.DUE, waiting.rotation_id) is None


def test_finalize_takes_a_slot_too_and_waits_back_in_grace(budgeted: Budgeted) -> None:
    stored = budgeted.start("apps/budget/finalize", owner="t1")
    rid = stored.rotation_id
    store = budgeted.engine.store
    store.update(rid, finalize_requested="on-call at now")
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    waiting = budgeted.due(rid, owner="t2")
    assert waiting.state == "grace" and waiting.slot_wait == TARGET
    assert waiting.attempts == 0 and "finalize" not in budgeted.rotator.calls
    assert not waiting.lease_owner and budgeted.harness.text.zscore(keys.DUE, rid) is not None
    assert store.hold(rid, "on-call", 30.0) == "ok", "on-call may still hold it for a rollback"
    store.unhold(rid, "on-call")
    wake = budgeted.slots.release(TARGET, "other:rotate", 300.0)
    assert wake is not None and wake.rotation_id == rid
    done = budgeted.due(rid, owner="t3", lease=wake.lease)
    assert done.state == "done" and done.slot_wait is None
    assert budgeted.rotator.calls[-1] == "finalize"
    assert budgeted.harness.text.zscore(keys.DUE, rid) is None
    assert budgeted.slots.holders(TARGET) == []


def test_a_rollback_takes_a_slot_too_and_waits_held_in_grace(budgeted: Budgeted) -> None:
    stored = budgeted.start("apps/budget/rollback", owner="t1")
    rid = stored.rotation_id
    store = budgeted.engine.store
    assert store.hold(rid, "hold-1", 300.0) == "ok"
    assert budgeted.slots.acquire(TARGET, 1, "other:rotate", 30.0, rotation_id="other")
    with pytest.raises(RetryLater) as waited:
        budgeted.engine.rollback(RollbackRequest(rid, hold="hold-1"), owner="t2")
    assert 1.0 <= waited.value.countdown <= 2.0
    held = store.require(rid)
    assert held.state == "grace" and held.lease_owner == "hold-1", "still held for on-call"
    assert held.slot_wait == TARGET
    said = progress(Situation(held))
    assert any("a rollback is in progress" in line for line in said), said
    assert any(f"waiting for a slot of target {TARGET}" in line for line in said), said
    assert budgeted.harness.text.zscore(keys.DUE, rid) is not None, "its finalize entry stays"
    with pytest.raises(RetryLater):  # waiting on: the wait stays recorded
        budgeted.engine.rollback(RollbackRequest(rid, hold="hold-1"), owner="t2")
    assert store.require(rid).slot_wait == TARGET
    budgeted.slots.release(TARGET, "other:rotate", 300.0)
    done = budgeted.engine.rollback(RollbackRequest(rid, hold="hold-1"), owner="t2")
    assert done is not None and done.state == "rolled_back" and done.slot_wait is None
    assert budgeted.slots.holders(TARGET) == []
