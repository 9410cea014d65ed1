"""Failures with real workers: CAS conflicts, transient ScaiVault faults, permanent ones.

Every failure must be loud (state, error log line, metric, history entry, alert POST with no
secret) and leave the old credential untouched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from orchestrator.state import history, keys
from tests.fixtures.worker import AlertSink, EngineStack
from tests.rotators.ledger import creds_key, current_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/faults/db"
OLD = "SENTINEL-old-faults-1f2e"


def _start(
    stack: EngineStack,
    alerts: AlertSink | None = None,
    *,
    updater: bool = False,
    hold: list[str] | None = None,
    fault: dict[str, Any] | None = None,
) -> int:
    if alerts is not None:
        stack.env["ROTATOR_ALERT_WEBHOOK_URL"] = alerts.url
    stack.routing(stack.ledger_rule(updater=updater, hold=hold or []))
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
        ledger.set(current_key(PATH), fingerprint(OLD))
    if fault:
        stack.emulator.fault(**fault)
    stack.start(workers=1)
    stack.publish(path=PATH, event_id="evt_faults", from_version=version)
    return version


def _ledger(stack: EngineStack) -> dict[str, str]:
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        return ledger.hgetall(creds_key(PATH))


def _assert_loud(stack: EngineStack, alerts: AlertSink, state: str, reason_part: str) -> None:
    record = stack.wait_run(PATH, state)
    assert reason_part in (record.last_error or "")
    stack.wait(lambda: alerts.bodies, 10, "the alert POST")
    [alert] = alerts.bodies
    assert alert["path"] == PATH and alert["rotation_id"] == record.rotation_id
    assert alert["state"] == state and reason_part in alert["reason"]
    assert "SENTINEL" not in json.dumps(alert)
    entries = history.read(stack.client, PATH)
    assert any(e["event"] == "rotation_failed" and e["state"] == state for e in entries)
    outcomes = stack.client.hgetall(keys.METRIC_OUTCOMES)
    assert outcomes.get(json.dumps([record.rotator, state])) == "1"
    worker_log = stack.children[0].log_tail(100_000)
    assert '"event": "rotation_failed"' in worker_log and '"level": "error"' in worker_log
    assert "SENTINEL" not in worker_log


def test_cas_conflict_abandons_an_issuer_and_revokes_its_unused_credential(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    version = _start(stack, alert_sink, hold=["verify"])
    stack.reached("verify")
    theirs = stack.emulator.put_secret(PATH, {"username": "app", "password": "someone-else"})
    stack.release("verify")
    _assert_loud(stack, alert_sink, "failed", "CAS conflict")
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, theirs]
    ledger = _ledger(stack)
    assert ledger.pop(fingerprint(OLD)) == "active", "the old credential is untouched"
    assert list(ledger.values()) == ["revoked"], "our unused new credential is revoked"


def test_cas_conflict_sends_an_updater_to_needs_attention_keeping_its_sealed_value(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    _start(stack, alert_sink, updater=True, hold=["verify"])
    rotation_id = stack.reached("verify")
    stack.emulator.put_secret(PATH, {"username": "app", "password": "someone-else"})
    stack.release("verify")
    _assert_loud(stack, alert_sink, "needs_attention", "CAS conflict")
    assert stack.store.sealed(rotation_id), "the applied value stays recoverable"


def test_transient_vault_faults_are_retried_to_done(engine_stack: EngineStack) -> None:
    stack = engine_stack
    fault = {"match": PATH, "methods": ["PUT"], "code": "service_unavailable", "count": 4,
             "retry_after": 0.4}  # fmt: skip
    version = _start(stack, fault=fault)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert done.state == "done", done
    assert [f["hits"] for f in stack.emulator.faults()] == [4]
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    retries = [e for e in history.read(stack.client, PATH) if e["event"] == "step_retry"]
    assert retries and all(e["step"] == "store" for e in retries)


def test_permanent_vault_fault_fails_at_once_and_loudly(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    fault = {"match": PATH, "methods": ["PUT"], "code": "access_denied", "count": 1}
    version = _start(stack, alert_sink, fault=fault)
    _assert_loud(stack, alert_sink, "failed", "AccessDenied")
    record = stack.store.last(PATH)
    assert record is not None and record.attempts == 1, "permanent errors are not retried"
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version]
    ledger = _ledger(stack)
    assert ledger.pop(fingerprint(OLD)) == "active"
    assert list(ledger.values()) == ["revoked"]


def _start_rejecting(stack: EngineStack, alerts: AlertSink, reject_first: int) -> int:
    stack.env["ROTATOR_ALERT_WEBHOOK_URL"] = alerts.url
    stack.routing(stack.ledger_rule(reject_first=reject_first))
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
    stack.start(workers=1)
    stack.publish(path=PATH, event_id="evt_reject", from_version=version)
    return version


def test_a_rejected_value_is_discarded_and_minted_again(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    version = _start_rejecting(stack, alert_sink, reject_first=1)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert done.state == "done" and done.mint_attempts == 1, done
    stored = stack.emulator.get_secret(PATH)["data"]["password"]
    ledger = _ledger(stack)
    assert ledger.pop(fingerprint(stored)) == "active"
    assert ledger.pop(fingerprint(OLD)) == "revoked"
    assert list(ledger.values()) == ["revoked"], "the rejected value was discarded"
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    assert alert_sink.bodies == []


def test_values_rejected_again_and_again_fail_after_max_mint_attempts(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    version = _start_rejecting(stack, alert_sink, reject_first=99)
    _assert_loud(stack, alert_sink, "failed", "rejected 3 minted values")
    ledger = _ledger(stack)
    assert ledger.pop(fingerprint(OLD)) == "active", "the old credential is untouched"
    assert list(ledger.values()) == ["revoked"] * 3
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version]


def test_finalize_does_not_revoke_the_old_credential_when_the_new_one_fails(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    stack.env["ROTATOR_ALERT_WEBHOOK_URL"] = alert_sink.url
    stack.routing(stack.ledger_rule())
    stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
    stack.start(workers=1, beat=False)
    stack.publish(path=PATH, event_id="evt_refinal")
    stack.wait_run(PATH, "grace")
    stored = stack.emulator.get_secret(PATH)["data"]["password"]
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(stored), "revoked")  # broken during grace
    stack.beat()
    _assert_loud(stack, alert_sink, "needs_attention", "revoked")
    assert _ledger(stack)[fingerprint(OLD)] == "active", "old credential kept: new one is broken"


def test_transient_faults_beyond_the_attempt_budget_need_attention(
    engine_stack: EngineStack, alert_sink: AlertSink
) -> None:
    stack = engine_stack
    stack.env["ROTATOR_MAX_ATTEMPTS"] = "3"
    fault = {"match": PATH, "methods": ["PUT"], "code": "service_unavailable", "retry_after": 0.4}
    version = _start(stack, alert_sink, fault=fault)
    _assert_loud(stack, alert_sink, "needs_attention", "still failing after 3 attempts")
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version]
    assert _ledger(stack)[fingerprint(OLD)] == "active"
