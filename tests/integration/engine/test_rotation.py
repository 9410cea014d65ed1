"""End to end with real worker processes: rotation.due -> grace -> done, duplicates, faults."""

from __future__ import annotations

import pytest
import redis

from orchestrator.engine.ids import scheduled_id
from orchestrator.state import history
from orchestrator.state.due import DueQueue
from rotators.versions import ROTATED_BY
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/billing/db"


def _seed(stack: EngineStack, password: str = "old-password-1", path: str = PATH) -> int:
    version = stack.emulator.put_secret(
        path, {"username": "billing", "password": password}, metadata={"description": "billing"}
    )
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(path), fingerprint(password), "active")
    return version


def _ledger(stack: EngineStack) -> dict[str, str]:
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        return ledger.hgetall(creds_key(PATH))


def test_rotation_due_to_done(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    version = _seed(stack)
    stack.start()
    stack.publish(path=PATH, event_id="evt_1", from_version=version, grace_period="2s")
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert done.state == "done", done
    assert done.rotation_id == scheduled_id(PATH, version)
    assert (done.from_version, done.new_version) == (version, version + 1)
    current = stack.emulator.get_secret(PATH)
    assert current["version"] == version + 1
    meta = current["metadata"]
    assert meta["rotation_id"] == done.rotation_id and meta["rotated_by"] == ROTATED_BY
    assert meta["previous_version"] == version and meta["rotator"] == "test-ledger"
    assert meta["finalize_after"] and meta["description"] == "billing"
    assert current["data"]["username"] == "billing"
    ledger = _ledger(stack)
    assert ledger[fingerprint("old-password-1")] == "revoked"
    assert ledger[fingerprint(current["data"]["password"])] == "active"
    events = [e["event"] for e in history.read(stack.client, PATH)]
    assert "rotation_stored" in events and events[-1] == "rotation_finalized"


def test_a_queued_message_with_an_over_long_grace_uses_the_rules(engine_stack: EngineStack) -> None:
    """Messages queued before durations were bounded may carry one: the grace is ignored (a
    warning), never a failed run after the new credential exists."""
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    paths = {f"{PATH}-{n}": grace for n, grace in enumerate(["2914000d", "999999999d999999999h"])}
    versions = {path: _seed(stack, path=path) for path in paths}
    stack.start(beat=False)
    for path, grace in paths.items():
        stack.publish(
            path=path, event_id=f"evt_{path}", from_version=versions[path], grace_period=grace
        )
    for path in paths:
        record = stack.wait_run(path, ("grace", "done", "failed", "needs_attention"))
        assert (record.state, record.grace_period) == ("grace", "2s"), record
        assert stack.emulator.get_secret(path)["version"] == versions[path] + 1
    assert stack.logs().count('"event": "grace_period_ignored"') == 2


def test_duplicate_and_late_deliveries_give_one_new_version(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    version = _seed(stack)
    stack.start(workers=2)
    event = {"path": PATH, "event_id": "evt_dup", "from_version": version}
    for _ in range(3):
        stack.publish(**event)
    stack.publish(path=PATH, trigger="manual", from_version=version, actor="alice")
    done = stack.wait_rotation(scheduled_id(PATH, version), "done")
    late = stack.publish(**event)  # a late redelivery after the rotation finished
    stack.wait(lambda: f"scaivault.rotate[{late}] succeeded" in stack.logs(), 20, "the late one")
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    assert stack.store.get(done.rotation_id) == done, "the late delivery changed nothing"
    runs = [r for r in stack.store.list() if r.path == PATH]
    assert {r.state for r in runs} <= {"done", "skipped"}, "the manual one merged or skipped"


def test_crashed_sweepers_claims_come_back(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    stack.env["ROTATOR_FINALIZE_LEASE"] = "1"
    version = _seed(stack)
    stack.start(workers=1, beat=False)
    stack.publish(path=PATH, event_id="evt_sweep", from_version=version)
    record = stack.wait_run(PATH, "grace")
    due = DueQueue(redis.Redis.from_url(stack.redis_url))
    # A sweeper claims the entry once it is due, then dies before enqueuing finalize.
    [(claimed, lease)] = stack.wait(lambda: due.claim(lease_ms=1500), 20, "the entry to be due")
    assert claimed == record.rotation_id and due.score(claimed) == lease
    stack.beat()
    done = stack.wait_run(PATH, "done")
    assert done.rotation_id == record.rotation_id
    assert due.score(claimed) is None, "the finalize removed the re-claimed entry"
    assert _ledger(stack)[fingerprint("old-password-1")] == "revoked"


def test_redis_flushed_during_grace_is_reconciled_from_scaivault(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    version = _seed(stack)
    stack.start(workers=1, beat=False)
    stack.publish(path=PATH, event_id="evt_flush", from_version=version)
    record = stack.wait_run(PATH, "grace")
    stack.client.flushdb()  # run records, due-queue, broker keys: all gone (the ledger is DB 1)
    assert stack.store.get(record.rotation_id) is None
    stack.send("scaivault.reconcile")
    rebuilt = stack.wait_run(PATH, "grace")
    assert rebuilt.rotation_id == record.rotation_id
    assert (rebuilt.from_version, rebuilt.new_version) == (version, version + 1)
    assert rebuilt.rotator == "test-ledger"
    stack.beat()
    stack.wait_run(PATH, "done")
    assert _ledger(stack)[fingerprint("old-password-1")] == "revoked"
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
