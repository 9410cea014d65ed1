"""A whole local stack, set up the way the spec's walk-through does: for the demo and the tests.

:class:`Sandbox` starts Redis (or uses a given one), the ScaiVault emulator, the fake Salesforce
over TLS, the webhook receiver, a worker and beat as child processes; gives the worker a
least-privilege ScaiVault token; subscribes the receiver to signed webhooks; and writes a
routing file with short grace periods. Secrets are added with :meth:`Sandbox.add_password` and
:meth:`Sandbox.add_salesforce`, which remember the original values (never printed) so callers
can check the outcome. Everything it started stops with :meth:`Sandbox.close`.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from orchestrator import connection
from orchestrator.errors import StackError
from orchestrator.local.processes import (
    REDIS_INSTALL_HINT,
    ChildProcess,
    RedisServer,
    Stack,
    cli_argv,
    free_port,
)
from orchestrator.settings import Settings
from orchestrator.state import keys

#: Grace period of the sandbox's routing rules, short so finalize is seen within the minute.
GRACE = "10s"
#: Width of the "who" column of progress lines (long enough for ``salesforce/oauth``).
WHO = 17
#: The identity the worker authenticates to ScaiVault as.
WORKER_IDENTITY = "sa:scaivault-rotator"

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class Endpoints:
    """Where the sandbox's processes listen, and the local secrets that tie them together."""

    workdir: Path
    prefix: str
    redis_url: str = ""
    vault_url: str = ""
    salesforce_url: str = ""
    salesforce_ca: str = ""
    receiver_url: str = ""
    metrics_port: int = 0
    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_urlsafe(24))
    webhook_secret: str = field(default_factory=lambda: "whsec_" + secrets.token_urlsafe(24))
    seal_key: str = field(default_factory=lambda: _fernet_key())
    worker_token: str = ""
    sf_app_id: str = ""

    @property
    def routing_file(self) -> Path:
        return self.workdir / "rotation.toml"

    @property
    def sf_admin_path(self) -> str:
        return f"{self.prefix}/admin/salesforce"


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def redis_reachable(url: str, master: str = connection.DEFAULT_MASTER) -> bool:
    """True when a Redis answers PING at ``url`` within a second."""
    try:
        client = connection.redis_client(
            url, master=master, socket_connect_timeout=1, socket_timeout=1
        )
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_in_use(url: str, master: str = connection.DEFAULT_MASTER) -> str | None:
    """Why the Redis at ``url`` must not be lent to a sandbox, or ``None`` if it may.

    A Redis holding our ``svr:*`` keys or the ``scaivault`` Celery queue belongs to a real
    deployment: a sandbox's worker and beat there would take its tasks, with the emulator
    standing in for ScaiVault.
    """
    client = connection.redis_client(url, master=master, socket_connect_timeout=1, socket_timeout=5)
    try:
        if client.exists(keys.TASK_QUEUE, f"_kombu.binding.{keys.TASK_QUEUE}"):
            return f"it holds the {keys.TASK_QUEUE!r} task queue"
        for _ in client.scan_iter(match=f"{keys.PREFIX}*", count=1000):
            return f"it holds {keys.PREFIX}* keys"
    finally:
        client.close()
    return None


def explicit_redis(settings: Settings) -> tuple[str | None, str | None]:
    """``(REDIS_URL, None)`` if the operator set it, it answers and it holds none of a
    deployment's keys; else ``(None, why not)`` (``why`` is ``None`` when it was not set)."""
    if "redis_url" not in settings.model_fields_set:
        return None, None
    url, master = settings.redis_url, settings.redis_sentinel_master
    if not redis_reachable(url, master):
        return None, "does not answer"
    try:
        busy = redis_in_use(url, master)
    except redis.RedisError as exc:
        return None, f"cannot be inspected ({type(exc).__name__})"
    if busy is not None:
        return None, f"is a deployment's Redis: {busy}"
    return url, None


def toml_value(value: Any) -> str:
    """``value`` (str, bool, int or finite float) as a TOML value; strings are escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"no TOML form for {type(value).__name__}")
    out = []
    for char in value:
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def routing_toml(rules: list[dict[str, Any]], comment: str = "") -> str:
    """A routing file (DESIGN §7) for ``rules``: dicts of ``match``, ``rotator``, optional
    ``grace_period`` and an optional ``options`` table. The one place tests and the sandbox
    build routing text, so a value with quotes or backslashes cannot break the file."""
    lines = [f"# {comment}"] if comment else []
    for rule in rules:
        lines.append("[[rules]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in rule.items() if k != "options"]
        if rule.get("options"):
            lines.append("[rules.options]")
            lines += [f"{k} = {toml_value(v)}" for k, v in rule["options"].items()]
        lines.append("")
    return "\n".join(lines)


class Sandbox:
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
    ) -> None:
        self.ends = Endpoints(workdir, prefix or f"demo/{secrets.token_hex(3)}")
        self.ends.redis_url = redis_url or ""
        self.echo = echo
        self.grace = grace
        self.engine_env = dict(engine_env or {})
        self.stack = Stack()
        self.children: dict[str, ChildProcess] = {}
        self.originals: dict[str, dict[str, Any]] = {}
        self.redis_note = "REDIS_URL" if redis_url else ""
        self._admin: httpx.Client | None = None
        self._salesforce: httpx.Client | None = None

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

    # --- setup through the APIs ----------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call the emulator as its admin (the spec's curl commands); raise on an error."""
        assert self._admin is not None
        response = self._admin.request(method, path, json=body)
        if response.status_code >= 300:
            raise StackError(f"emulator {method} {path} answered {response.status_code}")
        return response.json() if response.content else None

    def salesforce(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        """Call the fake Salesforce."""
        assert self._salesforce is not None
        return self._salesforce.request(method, path, json=body, **kwargs)

    def _configure_salesforce(self) -> None:
        app = self.salesforce("POST", "/_fake/apps", {"developer_name": "DemoApp", "kind": "eca"})
        self.ends.sf_app_id = str(app.raise_for_status().json()["id"])
        admin = self.salesforce("POST", "/_fake/admin-credential", {}).raise_for_status().json()
        self.originals[self.ends.sf_admin_path] = {
            "client_id": admin["client_id"],
            "client_secret": admin["client_secret"],
        }

    def _configure_vault(self) -> None:
        prefix = self.ends.prefix
        self.put(
            self.ends.sf_admin_path, self.originals[self.ends.sf_admin_path], "Salesforce admin"
        )
        policy = self.admin("POST", "/v1/policies", {
            "name": "scaivault-rotator",
            "description": "the rotation worker reads, writes and lists what it rotates",
            "rules": [{"path_pattern": f"{prefix}/**", "permissions": ["read", "write", "list"]}],
        })  # fmt: skip
        self.admin("POST", f"/v1/policies/{policy['id']}/bindings", {
            "identity_type": "service_account", "identity_id": WORKER_IDENTITY,
        })  # fmt: skip
        token = self.admin(
            "POST", "/v1/_emulator/tokens", {"identity": WORKER_IDENTITY, "ttl": "24h"}
        )
        self.ends.worker_token = str(token["token"])
        self.ends.receiver_url = f"http://127.0.0.1:{free_port()}/scaivault/events"
        self.admin("POST", "/v1/subscriptions", {
            "name": "scaivault-rotator",
            "paths": [f"{prefix}/**"],
            "events": ["rotation.due", "secret.rotated", "secret.updated"],
            "delivery": {"type": "webhook", "url": self.ends.receiver_url,
                         "secret": self.ends.webhook_secret},
        })  # fmt: skip
        self.rotation_policy = str(self.admin("POST", "/v1/rotation/policies", {
            "name": "demo", "interval": "90d", "grace_period": self.grace, "auto_generate": False,
        })["id"])  # fmt: skip
        self.echo(
            f"{'scaivault':<{WHO}} policy + token for {WORKER_IDENTITY}, webhook subscription, "
            f"rotation policy (grace {self.grace})"
        )

    def password_rule(self, folder: str = "db", **options: Any) -> dict[str, Any]:
        """The routing rule sending ``PREFIX/FOLDER/*`` to ``random-password``."""
        rule: dict[str, Any] = {
            "match": f"{self.ends.prefix}/{folder}/*",
            "rotator": "random-password",
            "grace_period": self.grace,
        }
        if options:
            rule["options"] = options
        return rule

    def salesforce_rule(self, grace: str | None = None, **options: Any) -> dict[str, Any]:
        """The routing rule sending ``PREFIX/salesforce/*`` to the fake Salesforce's app;
        ``options`` add to or override the defaults."""
        ends = self.ends
        defaults = {
            "my_domain_url": ends.salesforce_url,
            "app_id": ends.sf_app_id,
            "admin_secret_path": ends.sf_admin_path,
            "ca_bundle": ends.salesforce_ca,
            "propagation_timeout": 20.0,
            "propagation_interval": 0.5,
        }
        return {
            "match": f"{ends.prefix}/salesforce/*",
            "rotator": "salesforce-oauth",
            "grace_period": grace or self.grace,
            "options": {**defaults, **options},
        }

    def routing_rules(self) -> list[dict[str, Any]]:
        """The rules of the sandbox's routing file (subclasses change them here)."""
        fleet = {
            "match": f"{self.ends.prefix}/fleet/**",
            "rotator": "random-password",
            "grace_period": self.grace,
        }
        return [
            self.password_rule("db", length=24, field="password"),
            fleet,
            self.salesforce_rule(),
        ]

    def _write_routing(self) -> None:
        text = routing_toml(
            self.routing_rules(), comment="Written by the scaivault-rotator sandbox."
        )
        self.ends.routing_file.write_text(text, encoding="utf-8")

    def put(self, path: str, data: dict[str, Any], description: str) -> int:
        """Write a secret version as admin, as the spec's first step does."""
        body = {
            "data": data,
            "secret_type": "json",
            "metadata": {"description": description, "tags": ["demo"]},
            "options": {"max_versions": 10},
        }
        return int(self.admin("PUT", f"/v1/secrets/{path}", body)["version"])

    def add_password(self, name: str, *, folder: str = "db", scheduled: bool = True) -> str:
        """A database-style secret ``{username, password}`` at ``PREFIX/FOLDER/NAME``.

        ``db/*`` and ``fleet/**`` are routed to ``random-password``.
        """
        path = f"{self.ends.prefix}/{folder}/{name}"
        alphabet = string.ascii_letters + string.digits
        data = {"username": name, "password": "".join(secrets.choice(alphabet) for _ in range(20))}
        self.originals[path] = data
        self.put(path, data, f"{name} database password")
        if scheduled:
            self.schedule(path)
        return path

    def add_salesforce(self, name: str, *, scheduled: bool = True) -> str:
        """A Salesforce OAuth credential of a new consumer of the sandbox's app."""
        path = f"{self.ends.prefix}/salesforce/{name}"
        body = (
            self.salesforce("POST", f"/_fake/apps/{self.ends.sf_app_id}/consumers", {"name": name})
            .raise_for_status()
            .json()
        )
        data = {"client_id": body["client_id"], "client_secret": body["client_secret"]}
        self.originals[path] = data
        self.put(path, data, f"Salesforce OAuth for {name}")
        if scheduled:
            self.schedule(path)
        return path

    def schedule(self, path: str) -> None:
        """Attach ``path`` to the sandbox's rotation policy (90d interval, short grace)."""
        self.admin(
            "POST", f"/v1/rotation/policies/{self.rotation_policy}/secrets", {"secret_path": path}
        )

    def trigger(self, path: str) -> str:
        """``POST /v1/secrets/{path}/rotate``: ScaiVault fires a signed rotation.due."""
        return str(self.admin("POST", f"/v1/secrets/{path}/rotate").get("event_id"))

    def read(self, path: str, version: int | None = None) -> dict[str, Any]:
        """The emulator's full GET answer for ``path`` (as admin)."""
        suffix = f"?version={version}" if version is not None else ""
        result: dict[str, Any] = self.admin("GET", f"/v1/secrets/{path}{suffix}")
        return result

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt the emulator made."""
        return list(self.admin("GET", "/v1/_emulator/deliveries")["deliveries"])

    def salesforce_accepts(self, data: dict[str, Any]) -> bool:
        """Does the fake Salesforce's token endpoint accept this client_id/client_secret?"""
        response = self.salesforce(
            "POST",
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": str(data.get("client_id", "")),
                "client_secret": str(data.get("client_secret", "")),
            },
        )
        return response.status_code == 200

    def wait(self, seconds: float) -> None:
        """Sleep, failing early if a child died."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            dead = self.dead_children()
            if dead:
                raise StackError(f"{dead[0].name} died; its log ends with:\n{dead[0].log_tail()}")
            time.sleep(0.1)
