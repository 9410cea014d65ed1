"""A whole local stack, set up the way the spec's walk-through does: for the demo and the tests.

:class:`Sandbox` starts Redis (or uses a given one), the ScaiVault emulator, the fake Salesforce
over TLS, the webhook receiver, a worker and beat as child processes; then, through
:class:`~orchestrator.local.provisioning.Provisioning`, gives the worker a least-privilege
ScaiVault token, subscribes the receiver to signed webhooks and writes a routing file with
short grace periods. Secrets are added with :meth:`Sandbox.add_password` and
:meth:`Sandbox.add_salesforce`. Everything it started stops with :meth:`Sandbox.close`.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from orchestrator.errors import StackError
from orchestrator.local.endpoints import Endpoints
from orchestrator.local.processes import (
    REDIS_INSTALL_HINT,
    ChildProcess,
    RedisServer,
    Stack,
    cli_argv,
    free_port,
)
from orchestrator.local.provisioning import WHO, Echo, Provisioning

if TYPE_CHECKING:  # psycopg is optional: only a sandbox with a PostgreSQL part imports it
    from orchestrator.local.postgres_target import PostgresTarget

#: Grace period of the sandbox's routing rules, short so finalize is seen within the minute.
GRACE = "10s"


def _quiet(_: str) -> None:
    return None


class Sandbox(Provisioning):
    """The local stack. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    def __init__(
        self,
        workdir: Path,
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
        echo: Echo = _quiet,
        grace: str = GRACE,
        engine_env: dict[str, str] | None = None,
        postgres: PostgresTarget | None = None,
    ) -> None:
        self.ends = Endpoints(workdir, prefix or f"demo/{secrets.token_hex(3)}")
        self.ends.redis_url = redis_url or ""
        self.echo = echo
        self.grace = grace
        self.engine_env = dict(engine_env or {})
        self.postgres = postgres
        self.stack = Stack()
        self.children: dict[str, ChildProcess] = {}
        self.originals = {}
        self.redis_note = "REDIS_URL" if redis_url else ""
        self._admin = None
        self._salesforce = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Sandbox:
        """Start every process and set ScaiVault and Salesforce up; raise StackError on failure."""
        self.ends.workdir.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        self._start_emulator()
        self._start_salesforce()
        self._configure_salesforce()
        self._configure_vault()
        self._configure_postgres()
        self._write_routing()
        self._start_roles()
        return self

    def close(self) -> None:
        """Stop every process this sandbox started, newest first."""
        for client in (self._admin, self._salesforce):
            if client is not None:
                client.close()
        self.stack.close()

    def _child(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None
    ) -> ChildProcess:
        child = ChildProcess(
            name, argv, self.ends.workdir / f"{name}.log", env=env, cwd=self.ends.workdir
        )
        self.stack.add(child)
        self.children[name] = child
        return child.start()

    def dead_children(self) -> list[ChildProcess]:
        """Children that exited although they should be running."""
        return [child for child in self.children.values() if not child.alive]

    # --- processes ---------------------------------------------------------------------------

    def _start_redis(self) -> None:
        if self.ends.redis_url:
            self.echo(f"{'redis':<{WHO}} using REDIS_URL (reachable)")
            return
        try:
            server = RedisServer(self.ends.workdir / "redis")
        except StackError:
            raise StackError(
                "no Redis: REDIS_URL is not set to a reachable Redis, and redis-server is not "
                "installed. " + REDIS_INSTALL_HINT
            ) from None
        self.stack.add(server)
        server.start()
        self.ends.redis_url = server.url
        self.redis_note = f"private redis-server on port {server.port}"
        self.echo(f"{'redis':<{WHO}} {self.redis_note} (data in {server.directory})")

    def _start_emulator(self) -> None:
        port = free_port()
        self.ends.vault_url = f"http://127.0.0.1:{port}"
        argv = cli_argv(
            "emulator", "--port", str(port), "--admin-token", self.ends.admin_token,
            "--state-file", str(self.ends.workdir / "emulator-state.json"),
        )  # fmt: skip
        self._child("emulator", argv).wait_http(f"{self.ends.vault_url}/healthz", timeout=30)
        self._admin = httpx.Client(
            base_url=self.ends.vault_url,
            headers={"Authorization": f"Bearer {self.ends.admin_token}"},
            timeout=10.0,
            trust_env=False,
        )
        self.echo(f"{'emulator':<{WHO}} ScaiVault emulator at {self.ends.vault_url}")

    def _start_salesforce(self) -> None:
        argv = [
            sys.executable, "-m", "orchestrator.local.fake_salesforce", "--port", str(free_port()),
            "--tls-dir", str(self.ends.workdir / "salesforce-tls"),
            "--state-file", str(self.ends.workdir / "salesforce-state.json"),
        ]  # fmt: skip
        child = self._child("salesforce", argv)
        child.wait_log("fake_salesforce_ready", timeout=30)
        line = next(x for x in child.log_tail(1000).splitlines() if "fake_salesforce_ready" in x)
        ready = json.loads(line)
        self.ends.salesforce_url = str(ready["url"])
        self.ends.salesforce_ca = str(ready["ca_bundle"])
        context = ssl.create_default_context(cafile=self.ends.salesforce_ca)
        self._salesforce = httpx.Client(
            base_url=self.ends.salesforce_url, verify=context, timeout=10.0, trust_env=False
        )
        self.echo(f"{'salesforce':<{WHO}} fake Salesforce (TLS) at {self.ends.salesforce_url}")

    def role_env(self, token: str | None = None) -> dict[str, str]:
        """The environment for our own processes (receiver, worker, beat, CLI) in this stack."""
        # Pass the parent's environment through (PATH, locale...), minus our own settings,
        # so an operator's SCAIVAULT_*/ROTATOR_* cannot leak into the sandbox.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SCAIVAULT_", "ROTATOR_", "REDIS_URL"))
        }
        env.update(
            SCAIVAULT_URL=self.ends.vault_url,
            SCAIVAULT_TOKEN=token or self.ends.worker_token,
            SCAIVAULT_WEBHOOK_SECRET=self.ends.webhook_secret,
            REDIS_URL=self.ends.redis_url,
            ROTATOR_CONFIG=str(self.ends.routing_file),
            ROTATOR_SEAL_KEY=self.ends.seal_key,
            ROTATOR_LOG_FORMAT="json",
            ROTATOR_METRICS_PORT=str(self.ends.metrics_port),
            ROTATOR_HEARTBEAT_DIR=str(self.ends.workdir),
            # A fast sweep so a short grace visibly ends in finalize (the policy's seconds-long
            # grace is allowed: no minimum for this local sandbox); short retry backoff.
            ROTATOR_MIN_GRACE="0s",
            ROTATOR_SWEEP_INTERVAL="2",
            ROTATOR_RETRY_BACKOFF_MAX="5",
        )
        env.update(self.engine_env)
        return env

    def _start_roles(self) -> None:
        env = self.role_env()
        self.ends.metrics_port = free_port()
        env["ROTATOR_METRICS_PORT"] = str(self.ends.metrics_port)
        receiver_port = int(self.ends.receiver_url.rsplit(":", 1)[1].split("/")[0])
        receiver = self._child("receiver", cli_argv("serve", "--port", str(receiver_port)), env=env)
        worker = self._child("worker", cli_argv("worker", "--concurrency", "2"), env=env)
        beat = self._child("beat", cli_argv("beat"), env=env)
        receiver.wait_http(f"http://127.0.0.1:{receiver_port}/healthz", timeout=30)
        self.echo(f"{'receiver':<{WHO}} webhook receiver at {self.ends.receiver_url}")
        for child in (worker, beat):
            if not child.alive:
                raise StackError(
                    f"{child.name} exited at start; its log ends with:\n{child.log_tail()}"
                )
        self.echo(f"{'worker':<{WHO}} Celery worker (2 processes) and beat started")

    def wait(self, seconds: float) -> None:
        """Sleep, failing early if a child died."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            dead = self.dead_children()
            if dead:
                raise StackError(f"{dead[0].name} died; its log ends with:\n{dead[0].log_tail()}")
            time.sleep(0.1)
