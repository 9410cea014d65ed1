"""Configuration and transport refusals, proven on real processes.

- A pickle-serialized message on the queue is refused by a real worker: never deserialized
  (its payload would create a directory when unpickled), never executed, and the worker goes on
  with the next (JSON) message.
- Every role refuses an ``http://`` ScaiVault URL to a non-loopback host unless
  ``SCAIVAULT_ALLOW_INSECURE_HTTP=true``, without echoing the token.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.local.processes import cli_argv, free_port
from orchestrator.state import keys
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration


class Detonator:
    """Unpickling this runs ``os.mkdir(marker)``: proof that someone deserialized it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_message_is_refused_by_a_real_worker_and_never_executed(
    engine_stack: EngineStack, tmp_path: Path
) -> None:
    engine_stack.routing(engine_stack.ledger_rule("apps/**"))
    worker = engine_stack.worker()
    marker = tmp_path / "unpickled"
    evil = Celery("attacker", broker=engine_stack.redis_url, set_as_current=False)
    evil.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    try:
        evil.send_task(
            "scaivault.rotate",
            kwargs={"path": "apps/pickled", "trigger": "manual", "reason": Detonator(marker)},
            queue=keys.TASK_QUEUE,
            serializer="pickle",
        )
    finally:
        evil.close()

    engine_stack.publish(path="apps/after-the-pickle", trigger="manual")  # JSON, queued behind
    engine_stack.wait_run("apps/after-the-pickle", ("failed", "skipped"))

    assert not marker.exists(), "the worker unpickled the message"
    assert engine_stack.store.last("apps/pickled") is None, "the pickled task ran"
    log = worker.log_tail(10_000)
    assert "ContentDisallowed" in log or "untrusted content" in log, log[-3000:]
    assert engine_stack.client.llen(keys.TASK_QUEUE) == 0
    assert worker.alive


TOKEN = "tok_SENTINEL_must_not_be_echoed_7c1d"


def _env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCAIVAULT_", "ROTATOR_"))}
    routing = tmp_path / "rotation.toml"
    routing.write_text('[[rules]]\nmatch = "apps/**"\nrotator = "random-password"\n')
    env.update(
        SCAIVAULT_URL=url,
        SCAIVAULT_TOKEN=TOKEN,
        SCAIVAULT_WEBHOOK_SECRET="whsec_config_test",
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens: no role may get that far
        ROTATOR_CONFIG=str(routing),
        ROTATOR_METRICS_PORT="0",
        **extra,
    )
    return env


ROLES = {
    "serve": ("serve", "--port", str(free_port())),
    "worker": ("worker", "--concurrency", "1"),
    "beat": ("beat",),
    "status": ("status", "apps/x", "--json"),
    "rotate": ("rotate", "apps/x"),
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_role_refuses_plain_http_to_a_remote_scaivault(role: str, tmp_path: Path) -> None:
    env = _env("http://vault.example.com:8200", tmp_path)
    done = subprocess.run(
        cli_argv(*ROLES[role]), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "SCAIVAULT_URL uses plain http://" in done.stdout + done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_plain_http_is_accepted_on_loopback_or_when_explicitly_allowed(tmp_path: Path) -> None:
    for url, extra in (
        ("http://127.0.0.1:1", {}),
        ("http://vault.example.com:8200", {"SCAIVAULT_ALLOW_INSECURE_HTTP": "true"}),
    ):
        done = subprocess.run(
            cli_argv("status", "--json"),
            env=_env(url, tmp_path, **extra),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        assert "plain http://" not in output, (url, output)
        assert "Redis" in output and done.returncode == 1, output  # it got past the settings
        assert TOKEN not in output
