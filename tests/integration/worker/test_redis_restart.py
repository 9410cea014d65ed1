"""Redis restarts with a rotation in flight: the worker reconnects and each rotation ends once.

The broker and run store is a Redis of the test's own (AOF on, so a restart keeps the data); the
test rotator's ledger and its hold signals live on the session Redis, so a hold outlasts the
restart. A real prefork worker, started as ``deploy/`` starts it (mingle and gossip on), holds a
rotation inside ``verify`` while Redis restarts, then the rotation is released; three times, since
whether kombu 5.7 alone stops the worker depends on which of its sockets reports the lost connection
first (it did in about three restarts of four: see :mod:`orchestrator.worker.broker`). The worker
must keep running, each rotation must reach grace with exactly one new version, its task message
must still be in Redis or have been delivered again, and the worker must go on consuming new tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.local.processes import ChildProcess, RedisServer
from orchestrator.state import keys
from orchestrator.state.records import RunRecord
from tests.fixtures.emulator import Emulator
from tests.fixtures.worker import WORKER_IDENTITY, WORKER_PERMISSIONS, EngineStack
from tests.rotators.hook import reached_key, release_key
from tests.rotators.ledger import creds_key, current_key, fingerprint

pytestmark = pytest.mark.integration

OLD = "old-password-restart"
RESTARTS = 3
ENDED = ("grace", "done", "failed", "needs_attention")


@pytest.fixture
def stack(
    tmp_path: Path, own_redis: RedisServer, redis_url: str, emulator: Emulator
) -> Iterator[EngineStack]:
    """Workers and beat on ``own_redis``; the ledger and hold signals on the session Redis."""
    token = emulator.token(
        WORKER_IDENTITY, paths=["**"], permissions=list(WORKER_PERMISSIONS), ttl="2h"
    )
    engine = EngineStack(tmp_path, own_redis.url, emulator, token, rotator_redis_url=redis_url)
    yield engine
    engine.close()


def _secret(stack: EngineStack, path: str) -> int:
    version = stack.emulator.put_secret(path, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(path), fingerprint(OLD), "active")
        ledger.set(current_key(path), fingerprint(OLD))
    return version


def _assert_alive(worker: ChildProcess) -> None:
    if not worker.alive:
        code = worker.proc.returncode if worker.proc else None
        raise AssertionError(f"the worker exited (code {code}):\n{worker.log_tail(40)}")


def _held(stack: EngineStack, worker: ChildProcess) -> str:
    """Wait until a rotation is held inside ``verify``; its id. Fails once the worker exits."""

    def check() -> str | None:
        _assert_alive(worker)
        return stack.signals.lpop(reached_key("verify"))  # type: ignore[return-value]

    return stack.wait(check, 60, "a rotation held in verify")  # type: ignore[no-any-return]


def _ended(stack: EngineStack, worker: ChildProcess, path: str) -> RunRecord:
    """Wait until the run of ``path`` ended or reached grace. Fails once the worker exits."""

    def check() -> RunRecord | None:
        _assert_alive(worker)
        run = stack.store.last(path)
        return run if run is not None and run.state in ENDED else None

    return stack.wait(check, 120, f"{path} to reach {ENDED}")  # type: ignore[no-any-return]


def _assert_one_new_version(stack: EngineStack, run: RunRecord, version: int) -> None:
    assert run.state in ("grace", "done"), run
    versions = [v["version"] for v in stack.emulator.versions(run.path)]
    assert versions == [version, version + 1], "exactly one new version"
    stored = stack.emulator.get_secret(run.path)["data"]["password"]
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        assert ledger.hget(creds_key(run.path), fingerprint(stored)) == "active", "it works"


def _message_kept(stack: EngineStack, worker: ChildProcess, task_id: str) -> bool:
    """The task's message is in kombu's unacked hash (restored after the visibility timeout)
    or was delivered to the worker again."""
    received = worker.log_tail(100_000).count(f"scaivault.rotate[{task_id}] received")
    unacked = stack.client.hvals(keys.BROKER_UNACKED)  # [message, exchange, routing key]
    return received > 1 or any(task_id in value for value in unacked)


def test_worker_survives_redis_restarts_with_a_rotation_in_flight(
    stack: EngineStack, own_redis: RedisServer
) -> None:
    after = "apps/restart/after"
    stack.routing(stack.ledger_rule(after) + stack.ledger_rule("apps/restart/*", hold=["verify"]))
    worker = stack.worker(concurrency=2, wait=False, deployed=True)
    stack.beat()
    worker.wait_log("ready.", timeout=60)
    for n in range(RESTARTS):
        path = f"apps/restart/held-{n}"
        version = _secret(stack, path)
        task_id = stack.publish(path=path, event_id=f"evt_restart_{n}", from_version=version)
        rotation_id = _held(stack, worker)
        assert stack.store.require(rotation_id).state == "verifying", "the rotation is in flight"

        own_redis.restart()
        stack.release("verify")

        _assert_one_new_version(stack, _ended(stack, worker, path), version)
        assert _message_kept(stack, worker, task_id), "the in-flight message is not lost"
        # The resumed run announced verify again, and the release went unused: the held task
        # was terminated when the connection was lost. Neither may reach the next round.
        stack.signals.delete(reached_key("verify"), release_key("verify"))

    version = _secret(stack, after)
    stack.publish(path=after, event_id="evt_restart_after", from_version=version)
    _assert_one_new_version(stack, _ended(stack, worker, after), version)
    assert "Unrecoverable error" not in stack.logs()
