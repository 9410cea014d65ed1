"""``scaivault-rotator dev``: a local stack to try a rotator on, until Ctrl-C
(docs/writing-rotators.md#trying-it-on-a-local-stack).

It starts a private ``redis-server``, the ScaiVault emulator, the webhook receiver (subscribed
to every path), a worker and beat, each on a free port, with the author's routing file. The
worker follows that file (:mod:`orchestrator.worker.routing_reload`): edit it while the stack
runs and the next task routes with it. Sweeps run every second and no grace period is too
short (``ROTATOR_MIN_GRACE=0s``), so a finalize comes seconds after a rotation. The environment
the CLI needs is written to ``dev.env`` in the work directory (mode 0600: it holds the
emulator's admin token) and how to use it is printed. Nothing is installed: the worker imports
the plugins installed in this Python environment. Every child is stopped on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from orchestrator.errors import ConfigError, StackError
from orchestrator.local.demo import signals_as_interrupt
from orchestrator.local.endpoints import Endpoints
from orchestrator.local.processes import ChildProcess, RedisServer, Stack, cli_argv, free_port
from orchestrator.routing import RoutingTable

Echo = Callable[[str], None]

#: What the CLI needs to reach the stack (written to ``dev.env``).
CLI_ENV = ("SCAIVAULT_URL", "SCAIVAULT_TOKEN", "REDIS_URL", "ROTATOR_CONFIG")
#: How often beat sweeps for due finalizations, in seconds.
SWEEP_SECONDS = "1"


@dataclass
class DevStack:
    """The processes of one dev stack and what ties them together."""

    workdir: Path
    routing: Path
    concurrency: int = 1
    ends: Endpoints = field(init=False)
    stack: Stack = field(default_factory=Stack)
    children: dict[str, ChildProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.routing = self.routing.resolve()
        self.workdir = self.workdir.resolve()
        self.ends = Endpoints(self.workdir, prefix="")

    @property
    def env_file(self) -> Path:
        return self.workdir / "dev.env"

    def start(self) -> DevStack:
        """Start every process; raise StackError (naming the process and its log) on failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        redis = RedisServer(self.workdir / "redis")
        self.stack.add(redis)
        self.ends.redis_url = redis.start().url
        self._start_emulator()
        self._subscribe_receiver()
        self._start_roles()
        self._write_env()
        return self

    def close(self) -> None:
        """Stop every process this stack started, newest first."""
        self.stack.close()

    def env(self) -> dict[str, str]:
        """The environment of the receiver, worker and beat (the operator's own settings are
        not passed on, so they cannot point the stack elsewhere)."""
        own = ("SCAIVAULT_", "ROTATOR_", "REDIS_URL")
        env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        env.update(
            SCAIVAULT_URL=self.ends.vault_url,
            SCAIVAULT_TOKEN=self.ends.admin_token,
            SCAIVAULT_WEBHOOK_SECRET=self.ends.webhook_secret,
            REDIS_URL=self.ends.redis_url,
            ROTATOR_CONFIG=str(self.routing),
            ROTATOR_SEAL_KEY=self.ends.seal_key,
            ROTATOR_LOG_FORMAT="console",
            ROTATOR_METRICS_PORT="0",
            ROTATOR_MIN_GRACE="0s",
            ROTATOR_SWEEP_INTERVAL=SWEEP_SECONDS,
            ROTATOR_RETRY_BACKOFF_MAX="5",
        )
        return env

    def dead(self) -> ChildProcess | None:
        """A child that exited although it should be running."""
        return next((c for c in self.children.values() if not c.alive), None)

    def summary(self) -> dict[str, Any]:
        """What ``--json`` prints when the stack is up (no secret: the token is in dev.env)."""
        return {
            "event": "dev_stack_ready",
            "workdir": str(self.workdir),
            "env_file": str(self.env_file),
            "routing": str(self.routing),
            "redis_url": self.ends.redis_url,
            "scaivault_url": self.ends.vault_url,
            "receiver_url": self.ends.receiver_url,
            "pids": {name: child.pid for name, child in self.children.items()},
        }

    # --- processes --------------------------------------------------------------------------

    def _child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        child = ChildProcess(name, argv, self.workdir / f"{name}.log", env=env, cwd=self.workdir)
        self.stack.add(child)
        self.children[name] = child
        return child.start()

    def _start_emulator(self) -> None:
        port = free_port()
        self.ends.vault_url = f"http://127.0.0.1:{port}"
        token_file = self.workdir / "emulator-admin-token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.ends.admin_token, encoding="utf-8")
        argv = cli_argv(
            "emulator", "--port", str(port), "--admin-token-file", str(token_file),
            "--state-file", str(self.workdir / "emulator-state.json"),
        )  # fmt: skip
        self._child("emulator", argv).wait_http(f"{self.ends.vault_url}/healthz", timeout=30)

    def _subscribe_receiver(self) -> None:
        """Signed webhooks for every path go to the receiver (``rotate --via-vault``, policies)."""
        self.ends.receiver_url = f"http://127.0.0.1:{free_port()}/scaivault/events"
        body = {
            "name": "scaivault-rotator-dev",
            "paths": ["**"],
            "events": ["rotation.due", "secret.rotated", "secret.updated"],
            "delivery": {
                "type": "webhook",
                "url": self.ends.receiver_url,
                "secret": self.ends.webhook_secret,
            },
        }
        headers = {"Authorization": f"Bearer {self.ends.admin_token}"}
        response = httpx.post(
            f"{self.ends.vault_url}/v1/subscriptions",
            json=body,
            headers=headers,
            timeout=10.0,
            trust_env=False,
        )
        if response.status_code >= 300:
            raise StackError(f"the emulator refused the subscription ({response.status_code})")

    def _start_roles(self) -> None:
        env = self.env()
        port = self.ends.receiver_url.rsplit(":", 1)[1].split("/")[0]
        receiver = self._child("receiver", cli_argv("serve", "--port", port), env)
        worker = self._child(
            "worker", cli_argv("worker", "--concurrency", str(self.concurrency)), env
        )
        beat = self._child("beat", cli_argv("beat"), env)
        receiver.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        worker.wait_log("routing_watched", timeout=90)
        beat.wait_log("beat", timeout=60)

    def _write_env(self) -> None:
        env = self.env()
        self.env_file.touch(mode=0o600)
        self.env_file.write_text("".join(f"{n}={env[n]}\n" for n in CLI_ENV), encoding="utf-8")


def instructions(box: DevStack) -> str:
    """What to type next, for a person."""
    return "\n".join(
        [
            f"scaivault-rotator dev: state and logs in {box.workdir}",
            f"  redis     {box.ends.redis_url} (private redis-server)",
            f"  emulator  {box.ends.vault_url} (ScaiVault; its admin token is in dev.env)",
            f"  receiver  {box.ends.receiver_url} (subscribed to every path)",
            f"  worker    {box.concurrency} process(es), routing file {box.routing}",
            "            (edit it: the worker follows it; a broken file is refused and logged)",
            f"  beat      a sweep every {SWEEP_SECONDS} s; no minimum grace period",
            "In another terminal:",
            f"  set -a; . {box.env_file}; set +a",
            "  scaivault-rotator check-config",
            "  scaivault-rotator rotate PATH --wait",
            f"Logs: {box.workdir}/*.log. Press Ctrl-C to stop everything.",
        ]
    )


def run(*, routing: Path, workdir: Path | None, concurrency: int, as_json: bool) -> int:
    """Run the stack until Ctrl-C or SIGTERM (exit 0), a child dying (1), or a routing file
    that is invalid from the start (2, every problem listed). A temp dir of the stack's own is
    removed after a clean stop; a given ``workdir``, or one of a failed run, is kept."""

    def echo(text: str) -> None:
        click.echo(text, err=as_json)

    try:
        RoutingTable.load(routing)
    except ConfigError as exc:
        echo(f"scaivault-rotator dev: {routing} is not a valid routing file:")
        for problem in exc.problems:
            echo(f"  - {problem}")
        return 2
    work = workdir or Path(tempfile.mkdtemp(prefix="scaivault-dev-"))
    box = DevStack(work, routing, concurrency)
    code = _supervise(box, echo, as_json)
    if code == 0 and workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    elif code != 0:
        echo(f"state and logs kept in {work}")
    return code


def _supervise(box: DevStack, echo: Echo, as_json: bool) -> int:
    with signals_as_interrupt():
        try:
            box.start()
            echo(instructions(box))
            if as_json:
                click.echo(json.dumps(box.summary()))
            while (dead := box.dead()) is None:
                time.sleep(0.5)
            echo(f"error: {dead.name} exited; its log {dead.log_path} ends with:")
            echo(dead.log_tail())
            return 1
        except KeyboardInterrupt:
            echo("stopping every process of the dev stack")
            return 0
        except StackError as exc:
            echo(f"error: {exc}")
            return 1
        finally:
            box.close()
