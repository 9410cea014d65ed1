"""Target budgets on real worker processes: two workers (four pool processes) and a budget of 2
for one target; one worker is SIGKILLed while it holds slots. Every rotation ends ``done``, the
killed worker's slots come back by themselves, and the target never sees more than two
rotations at once (counted by the target itself, not by timing)."""

from __future__ import annotations

import pytest
import redis

from orchestrator.state.slots import Slots
from tests.fixtures.worker import EngineStack
from tests.rotators.hook import release_key
from tests.rotators.ledger import busy_key, creds_key, fingerprint

pytestmark = pytest.mark.integration

TARGET = "ledger.budget.test:6379"
LIMIT = 2
PATHS = [f"apps/budget/p{n}" for n in range(6)]
OLD = "old-password-budget"


def _routing(stack: EngineStack) -> str:
    rule = stack.ledger_rule(hold=["mint"], busy_ms=150)
    budget = f'target = "{TARGET}"\nmax_concurrent = {LIMIT}\n'
    return rule.replace("[rules.options]\n", budget + "[rules.options]\n", 1)


def test_the_budget_holds_on_real_workers_and_a_killed_workers_slots_come_back(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    stack.routing(_routing(stack))
    versions = {}
    for path in PATHS:
        versions[path] = stack.emulator.put_secret(path, {"username": "app", "password": OLD})
    ledger = redis.Redis.from_url(stack.target_url, decode_responses=True)
    for path in PATHS:
        ledger.hset(creds_key(path), fingerprint(OLD), "active")
    workers = [stack.worker("w1", concurrency=2, wait=False), stack.worker("w2", concurrency=2,
               wait=False)]  # fmt: skip
    stack.beat(wait=False)
    for child in workers:
        child.wait_log("ready.", timeout=60)
    for n, path in enumerate(PATHS):
        stack.publish(path=path, event_id=f"evt_budget_{n}", from_version=versions[path])

    held = [stack.reached("mint"), stack.reached("mint")]  # both slots taken, inside mint
    slots = Slots(stack.client)
    waiting = stack.wait(
        lambda: (
            len(w := [r for p in PATHS if (r := stack.store.last(p)) and r.slot_wait]) == 4 and w
        ),
        timeout=40,
        what="the four other rotations to wait for a slot",
    )
    assert {r.slot_wait for r in waiting} == {TARGET}
    assert all(r.attempts == 0 for r in waiting), "a slot wait spends no attempt"
    holding = [holder.split(":rotate:")[0] for holder in slots.holders(TARGET)]
    assert sorted(holding) == sorted(held), "each slot held by a run in its rotate steps"

    owners = {rid: stack.store.require(rid).lease_owner for rid in held}
    killed = stack.kill_holder_of(held[0])
    dead = [rid for rid, owner in owners.items() if owner and owner in killed.log_tail(100_000)]
    ledger.decr(busy_key("now"), len(dead))  # the killed steps act no more
    for _ in range(2 * len(PATHS)):  # let every held mint go on (each holds once)
        stack.signals.rpush(release_key("mint"), "go")

    for path in PATHS:
        done = stack.wait_run(path, ("done", "failed", "needs_attention"), timeout=90)
        assert done.state == "done", done
        assert done.slot_wait is None
        assert [v["version"] for v in stack.emulator.versions(path)] == [
            versions[path],
            versions[path] + 1,
        ], "exactly one new version"
    for rid in dead:
        assert stack.finished_elsewhere(rid, killed), "the killed worker's run was resumed"
    peak = ledger.zscore(busy_key("peak"), "peak")
    assert peak == LIMIT, f"the target saw {peak} rotations at once (budget {LIMIT})"
    stack.wait(lambda: slots.holders(TARGET) == [], 10, "every slot given back")
    assert '"event": "slot_wait"' in stack.logs()
    ledger.close()
