"""End to end with real worker processes: rotation.due -> grace -> done, duplicates, faults."""

from __future__ import annotations

import pytest
import redis

from orchestrator import history
from orchestrator.engine import ROTATED_BY, scheduled_id
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/billing/db"


def _seed(stack: EngineStack, password: str = "old-password-1") -> int:
    version = stack.emulator.put_secret(
        PATH, {"username": "billing", "password": password}, metadata={"description": "billing"}
    )
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(password), "active")
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
