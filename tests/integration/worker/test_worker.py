"""The worker process itself: refuses bad configuration, runs under plain ``celery -A``, metrics,
and exits with Celery's status (non-zero when Celery stops on an error, 0 after SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.local.processes import ChildProcess, cli_argv, free_port
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration

CELERY = [sys.executable, "-m", "celery", "-A", "orchestrator.worker.app", "worker"]
BAD_ROUTING = """
[[rules]]
match = "apps/**"
rotator = "no-such-rotator"
grace_period = "soon"
"""


@pytest.mark.parametrize("argv", [cli_argv("worker"), CELERY], ids=["cli", "celery"])
def test_worker_refuses_a_bad_routing_file_listing_every_problem(
    engine_stack: EngineStack, argv: list[str]
) -> None:
    engine_stack.routing(BAD_ROUTING)
    done = subprocess.run(argv, env=engine_stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start" in done.stderr
    assert "no-such-rotator" in done.stderr and "'soon' is not a duration" in done.stderr


def test_updater_without_a_seal_key_refuses_to_start(engine_stack: EngineStack) -> None:
    engine_stack.routing(engine_stack.ledger_rule(updater=True))
    env = {k: v for k, v in engine_stack.env.items() if k != "ROTATOR_SEAL_KEY"}
    done = subprocess.run(cli_argv("worker"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ROTATOR_SEAL_KEY is not set" in done.stderr


@pytest.mark.parametrize(
    ("role", "argv"),
    [
        ("worker", cli_argv("worker", "--")),
        ("worker", CELERY),
        ("beat", cli_argv("beat", "--")),
        ("beat", [*CELERY[:-1], "beat"]),
    ],
    ids=["worker-cli", "worker-celery", "beat-cli", "beat-celery"],
)
def test_a_process_celery_stops_on_an_error_exits_non_zero(
    engine_stack: EngineStack, tmp_path: Path, role: str, argv: list[str]
) -> None:
    engine_stack.routing(engine_stack.ledger_rule())
    taken = tmp_path / f"{role}.pid"
    taken.write_text(f"{os.getpid()}\n")  # a live process holds the pid file
    done = subprocess.run(
        [*argv, "--pidfile", str(taken)],
        env=engine_stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "already exists" in done.stdout + done.stderr, done.stderr[-2000:]
    assert done.returncode != 0, f"a supervisor must see that the {role} failed"


def test_worker_and_beat_stopped_by_sigterm_exit_0(engine_stack: EngineStack) -> None:
    engine_stack.routing(engine_stack.ledger_rule())
    worker = engine_stack.worker()
    beat = engine_stack.beat(wait=False)
    beat.wait_log("beat: Starting", timeout=60)
    for child in (worker, beat):
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)  # the main process only, as systemd stops it
        assert child.proc.wait(timeout=120) == 0, child.log_tail(20)


def test_plain_celery_worker_rotates_and_serves_metrics(
    engine_stack: EngineStack, tmp_path: Path
) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    port = free_port()
    stack.env["ROTATOR_METRICS_PORT"] = str(port)
    version = stack.emulator.put_secret("apps/plain/db", {"password": "SENTINEL-plain-old"})
    argv = [*CELERY, "-P", "prefork", "-c", "1", "--without-mingle", "--without-gossip"]
    worker = ChildProcess("celery", argv, tmp_path / "celery.log", env=stack.env).start()
    stack.children.append(worker)
    stack.beat()
    worker.wait_log("ready.", timeout=60)
    stack.publish(path="apps/plain/db", event_id="evt_plain", from_version=version)
    done = stack.wait_run("apps/plain/db", ("done", "failed", "needs_attention"))
    assert done.state == "done", done
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'scaivault_rotator_rotations_total{outcome="done",rotator="test-ledger"} 1.0' in text
    assert "SENTINEL" not in text
