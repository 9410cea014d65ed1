"""Crash tests: a worker SIGKILLed inside each step is resumed by another worker.

A test rotator holds inside a step (``tests.rotators.hook``) so the test knows the worker is
there, then the whole worker process group is SIGKILLed. The run's lease expires, beat's sweep
re-drives it, and a second worker finishes: exactly one new version, and it works.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from orchestrator.local.processes import ChildProcess
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, current_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/crash/db"
OLD = "old-password-crash"


def _start(
    stack: EngineStack,
    *,
    updater: bool = False,
    hold: list[str] | None = None,
    fault: dict[str, Any] | None = None,
) -> int:
    stack.routing(stack.ledger_rule(updater=updater, hold=hold or []))
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    if fault:
        stack.emulator.fault(**fault)
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
        ledger.set(current_key(PATH), fingerprint(OLD))
    stack.start(workers=2)
    stack.publish(path=PATH, event_id="evt_crash", from_version=version)
    return version


def _assert_one_working_version(
    stack: EngineStack, version: int, killed: ChildProcess, *, updater: bool
) -> None:
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"), timeout=60)
    assert done.state == "done", done
    assert stack.finished_elsewhere(done.rotation_id, killed), "resumed by another worker"
    versions = [v["version"] for v in stack.emulator.versions(PATH)]
    assert versions == [version, version + 1], "exactly one new version"
    stored = stack.emulator.get_secret(PATH)["data"]["password"]
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        if updater:
            assert ledger.get(current_key(PATH)) == fingerprint(stored), "target has the stored one"
        else:
            creds = ledger.hgetall(creds_key(PATH))
            assert creds[fingerprint(stored)] == "active", "the stored credential works"
            assert creds[fingerprint(OLD)] == "revoked", "the old one is revoked after grace"
            spare = [fp for fp, state in creds.items() if state == "active"]
            assert spare == [fingerprint(stored)], "no minted spare credential left active"
    assert stack.store.sealed(done.rotation_id) is None, "the sealed value is deleted"


@pytest.mark.parametrize("point", ["mint", "verify", "finalize"])
def test_issuer_worker_killed_in_step_is_resumed(engine_stack: EngineStack, point: str) -> None:
    version = _start(engine_stack, hold=[point])
    rotation_id = engine_stack.reached(point)
    killed = engine_stack.kill_holder_of(rotation_id)
    _assert_one_working_version(engine_stack, version, killed, updater=False)


def test_updater_worker_killed_after_apply_resumes_with_the_sealed_value(
    engine_stack: EngineStack,
) -> None:
    version = _start(engine_stack, updater=True, hold=["apply"])
    rotation_id = engine_stack.reached("apply")
    assert engine_stack.store.sealed(rotation_id), "sealed before apply"
    killed = engine_stack.kill_holder_of(rotation_id)
    _assert_one_working_version(engine_stack, version, killed, updater=True)


def test_worker_killed_while_storing_is_resumed(engine_stack: EngineStack) -> None:
    stack = engine_stack
    version = _start(stack, fault={"match": PATH, "methods": ["PUT"], "latency": 3.0, "count": 1})
    record = stack.wait_run(PATH, "storing")
    killed = stack.kill_holder_of(record.rotation_id)
    _assert_one_working_version(stack, version, killed, updater=False)
