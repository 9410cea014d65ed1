"""Liveness that proves the work loop turns: the heartbeat registry in Redis, the ``health`` exec
probe, and systemd's watchdog, each on real worker and beat processes whose loop is stopped
while the process itself stays up."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from orchestrator.local.processes import RedisServer, cli_argv, free_port
from orchestrator.state.workers import WorkerRegistry
from tests.fixtures.emulator import Emulator
from tests.fixtures.worker import WORKER_IDENTITY, WORKER_PERMISSIONS, EngineStack

pytestmark = pytest.mark.integration


def health(stack: EngineStack, role: str, *options: str) -> subprocess.CompletedProcess[str]:
    argv = cli_argv("health", role, *options)
    return subprocess.run(argv, env=stack.env, capture_output=True, text=True, timeout=60)


def wait_health(stack: EngineStack, role: str, code: int, *options: str) -> str:
    """Run the probe until it exits ``code``; its line."""
    deadline = time.monotonic() + 90
    while True:
        done = health(stack, role, *options)
        if done.returncode == code:
            return done.stdout.strip()
        assert time.monotonic() < deadline, f"health {role} kept answering {done.stdout!r}"
        time.sleep(0.2)


@pytest.fixture
def fast_beats(engine_stack: EngineStack) -> EngineStack:
    engine_stack.env["ROTATOR_HEARTBEAT_INTERVAL"] = "0.2"
    return engine_stack


def test_worker_probe_fails_while_its_work_loop_is_stuck_and_the_process_serves_on(
    fast_beats: EngineStack,
) -> None:
    stack = fast_beats
    port = free_port()
    stack.env["ROTATOR_METRICS_PORT"] = str(port)
    stack.routing(stack.ledger_rule(hold=["mint"]))
    stack.emulator.put_secret("apps/stuck/db", {"password": "stuck-initial-0"})
    stack.worker(pool="solo")  # tasks run on the consumer's loop: a held task stops the loop
    assert "w1@" in wait_health(stack, "worker", 0)

    stack.publish(path="apps/stuck/db", event_id="evt_stuck_1")
    stack.reached("mint")
    line = wait_health(stack, "worker", 1, "--max-age", "2")
    assert "last heartbeat" in line
    scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scrape.status_code == 200  # what the old /metrics probe saw: a healthy worker

    stack.release("mint")
    wait_health(stack, "worker", 0, "--max-age", "2")
    stack.wait_run("apps/stuck/db", ("grace", "done"))


@pytest.fixture
def own_stack(
    tmp_path: Path, own_redis: RedisServer, redis_url: str, emulator: Emulator
) -> Iterator[EngineStack]:
    """Beats every 0.5 s with the broker on ``own_redis`` (the test stops it); the ledger on the
    session Redis."""
    token = emulator.token(
        WORKER_IDENTITY, paths=["**"], permissions=list(WORKER_PERMISSIONS), ttl="2h"
    )
    engine = EngineStack(tmp_path, own_redis.url, emulator, token, rotator_redis_url=redis_url)
    engine.env["ROTATOR_HEARTBEAT_INTERVAL"] = "0.5"  # the probe's max age: 3 s
    yield engine
    engine.close()


def test_worker_probe_passes_while_redis_is_down_and_the_worker_reconnects(
    own_stack: EngineStack, own_redis: RedisServer
) -> None:
    stack = own_stack
    stack.routing(stack.ledger_rule())
    worker = stack.worker()
    wait_health(stack, "worker", 0)

    own_redis.stop()
    retries = 4  # Celery waits 2, 4, 6 s between attempts: 12 s, four times the max age
    while worker.log_tail(1_000_000).count("Cannot connect to") < retries:
        done = health(stack, "worker")
        assert done.returncode == 0, f"the probe failed during the outage: {done.stdout!r}"
        assert worker.alive, worker.log_tail(40)
    assert health(stack, "worker").returncode == 0

    own_redis.start()
    stack.emulator.put_secret("apps/outage/db", {"password": "outage-initial-0"})
    stack.publish(path="apps/outage/db", event_id="evt_outage_1")
    stack.wait_run("apps/outage/db", ("grace", "done"), timeout=90)
    assert health(stack, "worker").returncode == 0


def test_beat_probe_fails_while_beat_is_stopped(fast_beats: EngineStack) -> None:
    stack = fast_beats
    stack.routing(stack.ledger_rule())
    beat = stack.beat()
    wait_health(stack, "beat", 0)
    os.kill(beat.pid, signal.SIGSTOP)  # the process stays; its loop does not turn
    try:
        wait_health(stack, "beat", 1, "--max-age", "2")
    finally:
        os.kill(beat.pid, signal.SIGCONT)
    wait_health(stack, "beat", 0, "--max-age", "2")


def test_the_registry_lists_each_live_process_with_its_routing_table(
    fast_beats: EngineStack,
) -> None:
    stack = fast_beats
    port = free_port()
    stack.env["ROTATOR_METRICS_PORT"] = str(port)
    stack.routing(stack.ledger_rule())
    [worker], beat = stack.start(workers=1, beat=False), stack.beat()
    registry = WorkerRegistry(redis.Redis.from_url(stack.redis_url), ttl=60)
    stack.wait(lambda: registry.live("beat"), 60, "beat's heartbeat")
    [entry] = registry.live("worker")
    assert entry.process.node.startswith("w1@") and entry.process.pid == worker.pid
    assert entry.routing is not None
    assert entry.routing.path == str(stack.routing_path)
    assert entry.routing.sha256 == hashlib.sha256(stack.routing_path.read_bytes()).hexdigest()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'scaivault_rotator_workers{role="worker"} 1.0' in text
    assert 'scaivault_rotator_workers{role="beat"} 1.0' in text

    for child in (worker, beat):
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(timeout=120) == 0
    assert registry.live() == []  # a clean stop leaves no entry behind
    assert list(stack.tmp_path.glob("scaivault-rotator-*.heartbeat")) == []


def test_the_worker_pets_the_systemd_watchdog(fast_beats: EngineStack, tmp_path: Path) -> None:
    stack = fast_beats
    stack.routing(stack.ledger_rule())
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(address))
        notify.settimeout(60)
        stack.env["NOTIFY_SOCKET"] = str(address)
        stack.worker(wait=False)
        messages = [notify.recv(256).decode() for _ in range(3)]
    assert messages[0] == "READY=1"
    assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
