"""REDIS_URL through a real Redis Sentinel: state store, receiver, worker and beat on the master.

A private ``redis-server`` with a password is the master; a real Sentinel (``redis-server
CONF --sentinel``) on another free port monitors it under a non-default name. Every role gets
``sentinel://:PW@DEAD:PORT/3;sentinel://127.0.0.1:SENTINEL/3`` — the first Sentinel does not
answer, so the clients must move on to the second, ask it for the master and use db 3 there.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.sentinel

from orchestrator import connection
from orchestrator.engine.ids import scheduled_id
from orchestrator.local.processes import ChildProcess, RedisServer, cli_argv, free_port
from orchestrator.state import history, keys
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore
from tests.fixtures.emulator import Emulator
from tests.fixtures.receiver import LiveReceiver, event_body

pytestmark = pytest.mark.integration

MASTER = "ha-sentinel-test"
PASSWORD = "pw-sentinel-master-4c1e"
DB = 3
PATH = "apps/sentinel/db"


@dataclass
class SentinelSetup:
    """The master, the Sentinel and the URL that reaches the master through it."""

    master: RedisServer
    sentinel: ChildProcess
    url: str
    sentinel_port: int
    replicas: list[RedisServer]

    def direct(self, server: RedisServer | None = None) -> redis.Redis:
        """A plain client on the master's db (or ``server``'s): what the test checks against."""
        port = (server or self.master).port
        return redis.Redis(port=port, db=DB, password=PASSWORD, decode_responses=True)

    def master_port(self) -> int:
        """The master's port in ``SENTINEL MASTERS`` (what redis-py asks; it changes only once
        the failover is complete, after ``get-master-addr-by-name`` does)."""
        with redis.Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
            return int(sentinel.sentinel_masters()[MASTER]["port"])


@contextlib.contextmanager
def _running(tmp_path: Path, replicas: int = 0) -> Iterator[SentinelSetup]:
    """Start the master (with ``replicas`` replicas, known to Sentinel from its first look)."""
    servers = [RedisServer(tmp_path / f"redis{n}", appendonly=False) for n in range(replicas + 1)]
    sentinel: ChildProcess | None = None
    try:
        for server in servers:
            server.start()
            with redis.Redis(port=server.port) as client:
                client.config_set("masterauth", PASSWORD)  # for after a failover
                if server is not servers[0]:
                    client.replicaof("127.0.0.1", servers[0].port)
                client.config_set("requirepass", PASSWORD)
        port = free_port()
        conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its config file: must be writable
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {servers[0].port} 1\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
        )
        argv = ["redis-server", str(conf), "--sentinel"]
        sentinel = ChildProcess("sentinel", argv, tmp_path / "sentinel.log").start()
        sentinel.wait_port(port, timeout=15)
        dead = free_port()  # the first Sentinel of the URL answers nothing
        url = f"sentinel://:{PASSWORD}@127.0.0.1:{dead}/{DB};sentinel://127.0.0.1:{port}/{DB}"
        yield SentinelSetup(servers[0], sentinel, url, port, servers[1:])
    finally:
        if sentinel is not None:
            sentinel.kill()
        for server in servers:
            server.kill()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A master with a password and one Sentinel monitoring it as :data:`MASTER`."""
    with _running(tmp_path) as setup:
        yield setup


def test_state_store_reads_and_writes_the_master(sentinel_setup: SentinelSetup) -> None:
    client = connection.redis_client(sentinel_setup.url, master=MASTER, decode_responses=True)
    with client, sentinel_setup.direct() as direct:
        client.set("written-through-sentinel", "1")
        assert direct.get("written-through-sentinel") == "1"
        direct.set("written-directly", "2")
        assert client.get("written-directly") == "2"
    with pytest.raises(redis.sentinel.MasterNotFoundError):
        connection.redis_client(sentinel_setup.url, master="no-such-master").ping()


def test_receiver_worker_and_beat_rotate_through_sentinel(
    sentinel_setup: SentinelSetup,
    emulator: Emulator,
    receiver_factory: Callable[..., LiveReceiver],
    tmp_path: Path,
) -> None:
    url = sentinel_setup.url
    version = emulator.put_secret(PATH, {"username": "svc", "password": "old-sentinel-pw-91"})
    receiver = receiver_factory(url, redis_sentinel_master=MASTER)
    body = event_body("evt_sentinel_1", path=PATH, version=version, grace_period="1s")
    assert receiver.post(body).status_code == 202
    with sentinel_setup.direct() as direct:
        assert direct.llen(keys.TASK_QUEUE) == 1, "the event is queued on the master's db"

    env = _role_env(tmp_path, url, emulator)
    children = [
        ChildProcess(
            "worker", cli_argv("worker", "--concurrency", "1"), tmp_path / "w.log", env=env
        ),
        ChildProcess("beat", cli_argv("beat"), tmp_path / "beat.log", env=env),
    ]
    try:
        for child in children:
            child.start()
        store = RunStore(connection.redis_client(url, master=MASTER))
        record = _wait(store, scheduled_id(PATH, version), children)
    finally:
        for child in children:
            child.kill()
    assert record.state == "done", record
    current = emulator.get_secret(PATH)
    assert current["version"] == version + 1
    assert current["data"]["password"] != "old-sentinel-pw-91"
    with sentinel_setup.direct() as direct:
        assert direct.exists(keys.run(record.rotation_id)), "the run record is on the master"
    logs = "".join(child.log_tail(100_000) for child in children)
    assert PASSWORD not in logs and current["data"]["password"] not in logs


def _role_env(tmp_path: Path, url: str, emulator: Emulator) -> dict[str, str]:
    routing = tmp_path / "rotation.toml"
    routing.write_text('[[rules]]\nmatch = "apps/**"\nrotator = "random-password"\n')
    token = emulator.token("sa:rotator", paths=["**"], permissions=["read", "write", "list"])
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCAIVAULT_", "ROTATOR_", "REDIS_"))
    }
    env.update(
        REDIS_URL=url,
        REDIS_SENTINEL_MASTER=MASTER,
        SCAIVAULT_URL=emulator.url,
        SCAIVAULT_TOKEN=token,
        ROTATOR_CONFIG=str(routing),
        ROTATOR_METRICS_PORT="0",
        ROTATOR_SWEEP_INTERVAL="0.5",
        ROTATOR_MIN_GRACE="0s",
        ROTATOR_TASK_TIME_LIMIT="30",
        ROTATOR_VISIBILITY_TIMEOUT="60",
    )
    return env


def _wait(store: RunStore, rotation_id: str, children: list[ChildProcess]) -> RunRecord:
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        record = store.get(rotation_id)
        if record is not None and record.state in ("done", "failed", "needs_attention"):
            return record
        if any("raised unexpected" in c.log_tail(20) for c in children):
            break  # a task crashed: fail now with its traceback, not at the deadline
        time.sleep(0.1)
    logs = "\n".join(f"--- {c.name}\n{c.log_tail(40)}" for c in children)
    raise AssertionError(f"{rotation_id} did not finish: {store.get(rotation_id)}\n{logs}")


def test_cli_rotate_and_check_config_reach_the_master(
    sentinel_setup: SentinelSetup, emulator: Emulator, tmp_path: Path
) -> None:
    version = emulator.put_secret(PATH, {"username": "svc", "password": "old-sentinel-pw-92"})
    env = _role_env(tmp_path, sentinel_setup.url, emulator)
    checked = subprocess.run(
        cli_argv("check-config", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert "Redis at sentinel://***@127.0.0.1" in checked.stdout and " answers" in checked.stdout
    rotated = subprocess.run(
        cli_argv("rotate", PATH, "--actor", "alice", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    with sentinel_setup.direct() as direct:
        assert direct.llen(keys.TASK_QUEUE) == 1, "the CLI published on the master's db"
    with connection.redis_client(sentinel_setup.url, master=MASTER) as client:
        requested = history.read(client, PATH)
    assert [int(e["from_version"]) for e in requested] == [version], requested
    output = checked.stdout + checked.stderr + rotated.stdout + rotated.stderr
    assert PASSWORD not in output


def test_state_store_client_follows_a_failover_when_the_master_dies(tmp_path: Path) -> None:
    with _running(tmp_path, replicas=1) as setup:
        [replica] = setup.replicas
        client = connection.redis_client(setup.url, master=MASTER, decode_responses=True)
        with client, redis.Redis(port=setup.sentinel_port) as sentinel:
            client.set("before-failover", "1")
            _until(lambda: _replicated(setup, replica), "the replica to sync")
            setup.master.kill()  # the client's pooled connection breaks
            sentinel.sentinel_failover(MASTER)
            _until(lambda: setup.master_port() == replica.port, "Sentinel to promote the replica")
            _until(lambda: _role(replica) == "master", "the replica to take writes")
            client.set("after-failover", "2")
            with setup.direct(replica) as promoted:
                assert promoted.get("after-failover") == "2", "written to the new master"
                assert promoted.get("before-failover") == "1"


def _replicated(setup: SentinelSetup, replica: RedisServer) -> bool:
    with setup.direct(replica) as direct:
        return direct.get("before-failover") == "1"


def _role(server: RedisServer) -> str:
    with redis.Redis(port=server.port, password=PASSWORD, decode_responses=True) as direct:
        return str(direct.info("replication")["role"])


def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
