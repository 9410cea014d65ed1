"""Manual rotations go through the pending ledger like webhook events: the sweep publishes a lost
one again and it rotates once, under the id the CLI derived before publishing; an on-call's short
``--grace`` is kept while a webhook's (even one saying ``trigger: manual``) is raised."""

from __future__ import annotations

import time

import pytest
import redis

from orchestrator.engine.ids import manual_id
from orchestrator.errors import WebhookRejected
from orchestrator.receiver import envelope
from orchestrator.state import history, keys
from orchestrator.state.messages import RotateRequest
from orchestrator.state.pending import is_manual_event, manual_event_id, queue_publish
from orchestrator.state.records import RunRecord
from tests.fixtures.engine import PATH, EngineHarness
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, current_key, fingerprint

pytestmark = pytest.mark.integration

LEDGER_PATH = "apps/manual-ledger/db"
#: A queue no worker reads: the message is "lost" from the workers' point of view.
NOWHERE = "nobody-reads-this"


def _manual(path: str, version: int, grace: str) -> RotateRequest:
    return RotateRequest(
        path, "manual", event_id=manual_event_id(), from_version=version, grace_period=grace,
        actor="alice",
    )  # fmt: skip


def _publish(client: redis.Redis, request: RotateRequest, queue: str = keys.TASK_QUEUE) -> None:
    pipe = client.pipeline(transaction=True)
    queue_publish(pipe, request, queue=queue)
    pipe.execute()


def test_a_manual_rotation_keeps_its_short_grace_and_its_derived_id(
    harness: EngineHarness,
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    request = _manual(PATH, version, "0s")
    _publish(harness.client, request)
    assert harness.client.zscore(keys.PENDING, str(request.event_id)) is not None
    record = harness.engine.rotate(request, owner="task-1")
    assert record is not None and record.state == "grace" and record.grace_period == "0s"
    assert record.rotation_id == manual_id(request.path, request.event_id)
    assert harness.client.zcard(keys.PENDING) == 0, "the run settles its ledger entry"


def test_a_webhook_saying_manual_is_still_raised_to_the_minimum(harness: EngineHarness) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    forged = RotateRequest(
        PATH, "manual", event_id="manual-evt", from_version=version, grace_period="0s"
    )
    record = harness.engine.rotate(forged, owner="task-2")
    assert record is not None and record.grace_period == harness.settings.rotator_min_grace
    assert not is_manual_event("manual-evt")


def test_no_webhook_can_carry_a_manual_event_id() -> None:
    body = {"id": manual_event_id(), "type": "rotation.due", "created_at": "2026-11-27T08:00:00Z",
            "path": "apps/a", "data": {"version": 1, "trigger": "manual"}}  # fmt: skip
    with pytest.raises(WebhookRejected) as caught:
        envelope.shape(body)
    assert caught.value.status == 422


def test_a_lost_manual_message_is_published_again_and_rotates_once(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    stack.env["ROTATOR_PENDING_REPUBLISH_AFTER"] = "1"
    stack.routing(stack.ledger_rule())
    version = stack.emulator.put_secret(LEDGER_PATH, {"username": "app", "password": "old-9f"})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as target:
        target.hset(creds_key(LEDGER_PATH), fingerprint("old-9f"), "active")
        target.set(current_key(LEDGER_PATH), fingerprint("old-9f"))
    request = _manual(LEDGER_PATH, version, "1h")
    _publish(stack.client, request, queue=NOWHERE)
    stack.start(workers=1)

    rid = manual_id(request.path, request.event_id)
    done = stack.wait_rotation(rid, ("grace", "failed", "needs_attention"), timeout=60)
    assert done.state == "grace" and done.grace_period == "1h", done
    assert done.event_id == request.event_id and done.actor == "alice"
    assert [v["version"] for v in stack.emulator.versions(LEDGER_PATH)] == [version, version + 1]
    trail = history.read(stack.client, LEDGER_PATH)
    assert len([e for e in trail if e["event"] == "rotation_started"]) == 1
    stack.wait(lambda: stack.client.zcard(keys.PENDING) == 0, 10, "the ledger to empty")
    assert '"event": "event_republished"' in stack.logs()


def test_a_manual_rotation_lost_too_often_fails_loudly_under_its_own_id(
    harness: EngineHarness,
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    request = _manual(PATH, version, "0s")
    _publish(harness.client, request, queue=NOWHERE)
    event_id = str(request.event_id)
    long_ago = int((time.time() - 3600) * 1000)
    harness.client.zadd(keys.PENDING, {event_id: long_ago})
    harness.client.hset(keys.PENDING_PUBLISHES, event_id, harness.settings.rotator_max_attempts)

    harness.engine.sweep()
    failed = harness.engine.store.get(manual_id(PATH, event_id))
    assert failed is not None and failed.state == "failed", failed
    assert "lost" in str(failed.last_error) and failed.actor == "alice"
    assert harness.client.zcard(keys.PENDING) == 0


def test_a_manual_rotation_meeting_a_queued_run_gets_an_outcome_of_its_own(
    harness: EngineHarness,
) -> None:
    """A queued run (one waiting for a slot, say) holds the path: a webhook's request would
    merge into it, but on-call's wave watches the manual id, so that id ends skipped, naming
    the run that holds the path."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    holder = RunRecord("rot-holder", PATH, "queued", trigger="schedule", from_version=version)
    harness.engine.store.create(holder, lease=("someone", 30.0))
    request = _manual(PATH, version, "0s")
    record = harness.engine.rotate(request, owner="task-3")
    assert record is not None and record.rotation_id == manual_id(request.path, request.event_id)
    assert record.state == "skipped" and "rot-holder" in (record.last_error or "")
    assert harness.engine.store.require("rot-holder").state == "queued", "left to its worker"
