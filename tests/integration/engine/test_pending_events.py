"""No accepted event is lost: the pending ledger with a real receiver, Redis, workers and beat.

A message taken off the queue behind the workers' back (what a worker SIGKILLed between
kombu's ``BRPOP`` and its unacked bookkeeping leaves behind) is published again by the sweep
and rotates once; a task that gives up before a run record exists, and an event lost more often
than ``ROTATOR_MAX_ATTEMPTS``, become ``failed`` runs with an alert.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from orchestrator.engine.core import Engine
from orchestrator.engine.ids import scheduled_id
from orchestrator.settings import Settings
from orchestrator.state import history, keys
from orchestrator.state.records import RunRecord
from tests.fixtures.emulator import Emulator
from tests.fixtures.receiver import LiveReceiver, event_body
from tests.fixtures.worker import AlertSink, EngineStack
from tests.rotators.ledger import creds_key, current_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/pending/db"
OLD = "SENTINEL-old-pending-7c1d"


def _prepare(stack: EngineStack, alerts: AlertSink | None = None) -> int:
    stack.env["ROTATOR_PENDING_REPUBLISH_AFTER"] = "1"
    if alerts is not None:
        stack.env["ROTATOR_ALERT_WEBHOOK_URL"] = alerts.url
    stack.routing(stack.ledger_rule())
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as target:
        target.hset(creds_key(PATH), fingerprint(OLD), "active")
        target.set(current_key(PATH), fingerprint(OLD))
    return version


def _accept(live: LiveReceiver, event_id: str, version: int) -> None:
    reply = live.post(event_body(event_id, path=PATH, version=version, grace_period="2s"))
    assert reply.status_code == 202, reply.text


def _ledger_dump(client: redis.Redis) -> str:
    parts = [client.zrange(keys.PENDING, 0, -1, withscores=True)]
    parts += [client.hgetall(keys.PENDING_MESSAGES), client.hgetall(keys.PENDING_PUBLISHES)]
    return json.dumps(parts)


def _no_secret_anywhere(stack: EngineStack) -> None:
    for key in stack.client.scan_iter("*"):
        kind = stack.client.type(key)
        if kind == "string":
            value = stack.client.get(key)
        elif kind == "hash":
            value = json.dumps(stack.client.hgetall(key))
        elif kind == "list":
            value = json.dumps(stack.client.lrange(key, 0, -1))
        elif kind == "zset":
            value = json.dumps(stack.client.zrange(key, 0, -1))
        else:
            value = json.dumps(stack.client.xrange(key)) if kind == "stream" else ""
        assert "SENTINEL" not in (value or ""), key
    assert "SENTINEL" not in stack.logs()


def test_a_normal_rotation_leaves_no_ledger_entry(
    engine_stack: EngineStack,
    redis_url: str,
    receiver_factory: Callable[..., LiveReceiver],
) -> None:
    stack = engine_stack
    version = _prepare(stack)
    live = receiver_factory(redis_url)
    stack.start(workers=1)
    _accept(live, "evt_pending_ok", version)
    assert "evt_pending_ok" in _ledger_dump(stack.client)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert done.state == "done", done
    stack.wait(lambda: stack.client.zcard(keys.PENDING) == 0, 10, "the ledger to empty")
    assert not stack.client.exists(keys.PENDING_MESSAGES, keys.PENDING_PUBLISHES)
    assert "event_republished" not in stack.logs()
    _no_secret_anywhere(stack)


def test_a_message_lost_after_acceptance_is_republished_and_rotates_once(
    engine_stack: EngineStack,
    redis_url: str,
    receiver_factory: Callable[..., LiveReceiver],
) -> None:
    stack = engine_stack
    version = _prepare(stack)
    live = receiver_factory(redis_url)
    _accept(live, "evt_pending_lost", version)
    # kombu's BRPOP took it, and the worker was SIGKILLed before its unacked bookkeeping
    assert stack.client.rpop(keys.TASK_QUEUE) is not None
    assert stack.client.llen(keys.TASK_QUEUE) == 0 and not stack.client.exists(keys.BROKER_UNACKED)
    assert "SENTINEL" not in _ledger_dump(stack.client)
    # ScaiVault's redelivery is a duplicate: only the ledger remembers the event now
    again = live.post(event_body("evt_pending_lost", path=PATH, version=version))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    stack.start(workers=1)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"), timeout=60)
    assert done.state == "done" and done.event_id == "evt_pending_lost", done
    assert done.rotation_id == scheduled_id(PATH, version)
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    started = [e for e in history.read(stack.client, PATH) if e["event"] == "rotation_started"]
    assert len(started) == 1
    stack.wait(lambda: stack.client.zcard(keys.PENDING) == 0, 10, "the ledger to empty")
    assert '"event": "event_republished"' in stack.logs()
    _no_secret_anywhere(stack)


def test_a_task_that_gives_up_before_a_run_exists_fails_loudly(
    engine_stack: EngineStack,
    alert_sink: AlertSink,
    redis_url: str,
    receiver_factory: Callable[..., LiveReceiver],
) -> None:
    stack = engine_stack
    version = _prepare(stack, alert_sink)
    stack.env["ROTATOR_MAX_ATTEMPTS"] = "2"
    fault = {"match": PATH, "methods": ["GET"], "code": "service_unavailable", "count": 1000}
    stack.emulator.fault(**fault)
    live = receiver_factory(redis_url)
    stack.start(workers=1)
    _accept(live, "evt_pending_gives_up", version)

    failed = stack.wait_run(PATH, ("failed", "done", "needs_attention"), timeout=60)
    assert failed.state == "failed", failed
    assert failed.rotation_id == scheduled_id(PATH, version)
    assert failed.event_id == "evt_pending_gives_up"
    assert "gave up after 2 attempts to start" in (failed.last_error or "")
    stack.wait(lambda: alert_sink.bodies, 10, "the alert POST")
    [alert] = alert_sink.bodies
    assert alert["rotation_id"] == failed.rotation_id and alert["state"] == "failed"
    entries = history.read(stack.client, PATH)
    assert any(e["event"] == "rotation_failed" for e in entries)
    outcomes = stack.client.hgetall(keys.METRIC_OUTCOMES)
    assert outcomes.get(json.dumps(["test-ledger", "failed"])) == "1"
    assert stack.client.zcard(keys.PENDING) == 0
    stack.emulator.clear_faults()
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version]
    _no_secret_anywhere(stack)


def test_an_event_lost_more_than_max_attempts_times_becomes_a_failed_run(
    redis_url: str,
    redis_client: redis.Redis,
    receiver_factory: Callable[..., LiveReceiver],
    emulator: Emulator,
    alert_sink: AlertSink,
    tmp_path: Path,
) -> None:
    routing = tmp_path / "rotation.toml"
    routing.write_text('[[rules]]\nmatch = "apps/**"\nrotator = "random-password"\n')
    settings = Settings.load(
        redis_url=redis_url,
        scaivault_url=emulator.url,
        scaivault_token=emulator.token("sa:ledger-test", paths=["**"]),
        rotator_config=routing,
        rotator_alert_webhook_url=alert_sink.url,
        rotator_max_attempts=1,
        rotator_pending_republish_after=0.001,
    )
    engine = Engine.from_settings(settings)
    # an earlier due event for the same version ended without a new version: this event's
    # failure must be a run of its own, not swallowed as a duplicate of that one
    earlier = RunRecord(
        rotation_id=scheduled_id(PATH, 7), path=PATH, state="skipped", event_id="evt_earlier"
    )
    engine.store.create(earlier)
    live = receiver_factory(redis_url)
    _accept(live, "evt_pending_lost_twice", 7)
    try:
        redis_client.rpop(keys.TASK_QUEUE)  # lost once: published again
        assert engine.sweep().republished == ["evt_pending_lost_twice"]
        redis_client.rpop(keys.TASK_QUEUE)  # lost again: out of attempts
        time.sleep(0.01)  # older than the (1 ms) threshold
        swept = engine.sweep()
    finally:
        engine.close()
    assert swept.republished == []
    record = engine.store.require(scheduled_id(PATH, 7, "evt_pending_lost_twice"))
    assert record.state == "failed" and record.event_id == "evt_pending_lost_twice"
    assert record.rotator == "random-password"
    assert "lost 2 times" in (record.last_error or "")
    assert alert_sink.bodies and alert_sink.bodies[0]["rotation_id"] == record.rotation_id
    assert redis_client.zcard(keys.PENDING) == 0 and redis_client.llen(keys.TASK_QUEUE) == 0
