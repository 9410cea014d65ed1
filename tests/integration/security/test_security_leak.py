"""No secret value leaves ScaiVault except sealed: sentinels through every path of a real stack.

One stack of real processes (Redis, ScaiVault emulator, fake Salesforce, receiver, worker,
beat; every log at DEBUG, alerts to a real local HTTP server) rotates secrets whose data holds
unique sentinels: one rotation succeeds through the signed webhook, one fails on a ScaiVault
error (an alert), one runs from the CLI with ``--json``, one CLI call uses a bad token. Then
every place a value could land is searched for every sentinel, every minted password and every
credential of the stack: all processes' logs, every Redis command of the run (``MONITOR``, so
Celery messages and keys deleted since are included; base64 forms too, as Celery bodies are
base64), a dump of every key left, both metrics endpoints, history, CLI outputs and the alert
payloads. The sealed blob needs no exception: it is Fernet ciphertext, so the plaintext and its
base64 never appear in it.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from orchestrator.engine.ids import scheduled_id
from orchestrator.local.processes import RedisServer, cli_argv
from orchestrator.local.sandbox import Sandbox
from orchestrator.state import keys
from tests.fixtures.plugins import write_dist_info
from tests.fixtures.worker import ENGINE_ROTATORS, EngineStack

pytestmark = pytest.mark.integration


def sentinel(name: str) -> str:
    """A value that cannot occur by chance (letters and digits only: no escaping anywhere)."""
    return f"SENTINEL{name}{secrets.token_hex(8)}"


def forms(value: str) -> list[bytes]:
    """``value`` as bytes plus the base64 text of it at each of the three byte alignments."""
    raw = value.encode()
    out = [raw]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        # Drop the characters that mix in the padding bytes or the unknown next byte.
        start = {0: 0, 1: 4, 2: 4}[pad]
        out.append(encoded[start : len(encoded) - 4])
    return [form for form in out if len(form) >= 8]


class RedisMonitor:
    """Records every command Redis executes (``MONITOR`` on a raw socket) until stopped."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(None)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def text(self) -> bytes:
        return b"".join(self.chunks)

    def stop(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@dataclass
class AlertSink:
    """A real HTTP server on loopback that keeps every alert body it receives."""

    bodies: list[bytes] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> AlertSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                sink.bodies.append(self.rfile.read(length))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class LeakStack:
    box: Sandbox
    alerts: AlertSink
    monitor: RedisMonitor
    redis: redis.Redis
    outputs: list[str] = field(default_factory=list)

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = self.box.role_env(token=token or self.box.ends.admin_token)
        done = subprocess.run(
            cli_argv(*args),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.box.ends.workdir,
            check=False,
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def put(self, name: str, data: dict[str, str]) -> str:
        path = f"{self.box.ends.prefix}/db/{name}"
        self.box.originals[path] = data
        self.box.put(path, data, f"{name} (leak test)")
        self.box.schedule(path)
        return path

    def wait_state(self, path: str, states: set[str], timeout: float = 90) -> dict[str, Any]:
        from orchestrator.state.runs import RunStore

        deadline = time.monotonic() + timeout
        while True:
            record = RunStore(self.redis).last(path)
            if record is not None and record.state in states:
                return record.to_dict()
            if time.monotonic() > deadline:
                logs = self.box.children["worker"].log_tail(40)
                raise AssertionError(f"{path} never reached {states}: {record}\n{logs}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def leak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakStack]:
    """The stack at DEBUG with alerts on, its Redis watched by MONITOR from the first command."""
    workdir = tmp_path_factory.mktemp("leak")
    server = RedisServer(workdir / "redis").start()
    monitor = RedisMonitor(server.port)
    alerts = AlertSink().start()
    env = {"ROTATOR_LOG_LEVEL": "DEBUG", "ROTATOR_ALERT_WEBHOOK_URL": alerts.url}
    box = Sandbox(workdir / "stack", redis_url=server.url, grace="2s", engine_env=env)
    client = redis.Redis.from_url(server.url)
    try:
        box.start()
        yield LeakStack(box, alerts, monitor, client)
    finally:
        box.close()
        client.close()
        monitor.stop()
        alerts.stop()
        server.stop()


def _redis_dump(client: redis.Redis) -> bytes:
    """Every key and every value left in Redis, in readable and serialized forms."""
    out = []
    for key in client.scan_iter("*", count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            for name, value in client.hgetall(key).items():
                out += [name, value]
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            out += list(client.zrange(key, 0, -1) if kind == b"zset" else client.smembers(key))
        elif kind == b"stream":
            for _id, fields in client.xrange(key) or []:
                for name, value in (fields or {}).items():
                    out += [name, value]
        out.append(client.dump(key) or b"")
    return b"\n".join(out)


def test_no_secret_value_reaches_logs_redis_messages_metrics_history_cli_or_alerts(
    leak_stack: LeakStack,
) -> None:
    stack, box = leak_stack, leak_stack.box
    old_password, kept = sentinel("OLDPW"), sentinel("KEPT")
    bad_token = sentinel("BADTOKEN")
    ok_path = stack.put("leak-ok", {"username": "svc", "password": old_password, "api_key": kept})
    fail_old = sentinel("FAILPW")
    fail_path = stack.put("leak-fail", {"username": "svc", "password": fail_old})
    cli_old = sentinel("CLIPW")
    cli_path = stack.put("leak-cli", {"username": "svc", "password": cli_old})

    # 1. A scheduled rotation through the signed webhook, through grace to done.
    box.trigger(ok_path)
    ok = stack.wait_state(ok_path, {"done"})
    assert ok["new_version"] == 2

    # 2. A rotation that fails loudly: ScaiVault refuses the write (alert, error log, metric).
    box.admin("POST", "/v1/_emulator/faults", {
        "match": fail_path, "code": "access_denied", "methods": ["PUT"], "count": 100,
    })  # fmt: skip
    box.trigger(fail_path)
    failed = stack.wait_state(fail_path, {"failed", "needs_attention"})
    assert "access_denied" in (failed["last_error"] or "")
    box.admin("DELETE", "/v1/_emulator/faults")

    # 3. The on-call CLI, every command with --json; and one call with a bad token.
    rotated = stack.cli("rotate", cli_path, "--wait", "--json", "--actor", "leak-test")
    assert rotated.returncode == 0, rotated.stderr
    for args in (("status", ok_path), ("status", fail_path), ("status",),
                 ("history", ok_path), ("history", fail_path), ("history", cli_path),
                 ("rotators",), ("check-config",)):  # fmt: skip
        done = stack.cli(*args, "--json")
        assert done.returncode in (0, 1), (args, done.stderr)
        json.loads(done.stdout)
    denied = stack.cli("rotate", cli_path, "--json", token=bad_token)
    assert denied.returncode != 0
    stack.wait_state(cli_path, {"done"})

    # The alert really arrived, and the monitor really saw the Celery messages.
    deadline = time.monotonic() + 20
    while not any(fail_path.encode() in b for b in stack.alerts.bodies):
        assert time.monotonic() < deadline, "no alert for the failed rotation"
        time.sleep(0.1)
    assert any(form in stack.monitor.text() for form in forms(f'"path": "{ok_path}"')[1:])

    # Every value that must stay inside ScaiVault (and the stack's own credentials).
    values = {"old password": old_password, "kept field": kept, "failed secret": fail_old,
              "cli secret": cli_old, "bad token": bad_token,
              "admin token": box.ends.admin_token, "worker token": box.ends.worker_token,
              "webhook secret": box.ends.webhook_secret, "seal key": box.ends.seal_key}  # fmt: skip
    for path in (ok_path, cli_path):
        for version in box.admin("GET", f"/v1/secrets/{path}/versions")["versions"]:
            password = box.read(path, version["version"])["data"]["password"]
            values[f"{path} v{version['version']} password"] = password

    receiver = box.ends.receiver_url.rsplit("/scaivault/", 1)[0]
    places: dict[str, bytes] = {
        "redis commands (MONITOR)": stack.monitor.text(),
        "redis keys": _redis_dump(stack.redis),
        "worker metrics": httpx.get(f"http://127.0.0.1:{box.ends.metrics_port}/metrics").content,
        "receiver metrics": httpx.get(f"{receiver}/metrics").content,
        "alert payloads": b"\n".join(stack.alerts.bodies),
        "cli outputs": "\n".join(stack.outputs).encode(),
    }
    for log in sorted(Path(box.ends.workdir).glob("*.log")):
        places[f"log {log.name}"] = log.read_bytes()
    assert b'"level": "debug"' in places["log worker.log"], "the worker really logged at DEBUG"
    assert b"rotation_stored" in places["log worker.log"]
    assert b"scaivault_rotator_rotations_total" in places["worker metrics"]

    leaks = [
        f"{what} in {where}"
        for what, value in values.items()
        for where, text in places.items()
        if any(form in text for form in forms(value))
    ]
    assert not leaks, leaks


def test_a_replayed_event_after_its_dedupe_claim_is_gone_makes_no_new_version(
    leak_stack: LeakStack,
) -> None:
    """The signature covers only the body, so a captured event can be replayed. With its dedupe
    claim lost (as after the claim expired or Redis lost data) the receiver accepts it again, but
    the worker re-reads ScaiVault and finds the rotation done: still exactly one new version."""
    stack, box = leak_stack, leak_stack.box
    path = stack.put("replay", {"username": "svc", "password": sentinel("REPLAY")})
    event_id = box.trigger(path)
    stack.wait_state(path, {"done"})
    assert box.read(path)["version"] == 2

    assert stack.redis.delete(keys.event(event_id)) == 1
    box.admin("POST", f"/v1/_emulator/deliveries/{event_id}/redeliver", {"times": 1})
    rid = scheduled_id(path, 1)
    deadline = time.monotonic() + 30
    while not _accepted_twice(box, event_id):
        assert time.monotonic() < deadline, "the replay was not accepted by the receiver"
        time.sleep(0.1)

    # Lose the run record too: the replay is then a stale request (version 1 is not current).
    stack.redis.delete(keys.event(event_id), keys.run(rid), keys.last(path))
    box.admin("POST", f"/v1/_emulator/deliveries/{event_id}/redeliver", {"times": 1})
    skipped = stack.wait_state(path, {"skipped"}, timeout=30)
    assert "stale request" in (skipped["last_error"] or "")
    assert box.read(path)["version"] == 2
    assert len(box.admin("GET", f"/v1/secrets/{path}/versions")["versions"]) == 2


def _accepted_twice(box: Sandbox, event_id: str) -> bool:
    answers = box.admin("GET", f"/v1/_emulator/deliveries?event_id={event_id}")["deliveries"]
    return sum(1 for d in answers if d.get("status") == 202) >= 2


def test_a_careless_rotator_cannot_leak_through_logs_errors_history_or_alerts(
    engine_stack: EngineStack,
) -> None:
    """A plugin that logs its minted data at DEBUG and raises a ``ValueError`` holding the old
    and new values: the redaction processor and the engine's error handling contain it."""
    write_dist_info(
        engine_stack.tmp_path / "plugins",
        {**ENGINE_ROTATORS, "test-careless": "tests.rotators.careless:CarelessRotator"},
    )
    engine_stack.routing('[[rules]]\nmatch = "careless/**"\nrotator = "test-careless"\n')
    alerts = AlertSink().start()
    port = int(engine_stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    monitor = RedisMonitor(port)
    try:
        engine_stack.env.update(ROTATOR_LOG_LEVEL="DEBUG", ROTATOR_ALERT_WEBHOOK_URL=alerts.url)
        worker = engine_stack.worker()
        old = sentinel("CARELESSOLD")
        engine_stack.emulator.put_secret("careless/db", {"username": "svc", "password": old})
        engine_stack.publish(path="careless/db", trigger="manual")
        failed = engine_stack.wait_run("careless/db", ("failed", "needs_attention"))
        deadline = time.monotonic() + 20
        while not alerts.bodies:
            assert time.monotonic() < deadline, "no alert for the failed rotation"
            time.sleep(0.1)
    finally:
        monitor.stop()
        alerts.stop()

    log = worker.log_path.read_bytes()
    assert b"careless_minted" in log, "the careless log line was really written"
    assert failed.last_error is not None and "ValueError" in failed.last_error
    places = {
        "worker log": log,
        "redis commands (MONITOR)": monitor.text(),
        "redis keys": _redis_dump(redis.Redis.from_url(engine_stack.redis_url)),
        "alert payloads": b"\n".join(alerts.bodies),
    }
    for where, text in places.items():
        for form in forms(old) + forms("CARELESSNEW"):
            assert form not in text, f"a secret value leaked into {where}"
