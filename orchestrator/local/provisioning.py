"""What a sandbox sets up through ScaiVault's and the fake Salesforce's APIs, and its secrets.

:class:`Provisioning` is the half of :class:`~orchestrator.local.sandbox.Sandbox` that talks to
the running emulator (as its admin, like the spec's curl commands) and to the fake Salesforce:
it creates the Salesforce app and admin credential, the worker's least-privilege policy and
token, the signed webhook subscription and a rotation policy; it builds the routing rules; and
it adds secrets, remembering their original values (never printed) so callers can check the
outcome.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from orchestrator.errors import StackError
from orchestrator.local.endpoints import Endpoints
from orchestrator.local.processes import free_port
from orchestrator.local.routing_file import routing_toml

if TYPE_CHECKING:  # psycopg is optional: only a sandbox with a PostgreSQL part imports it
    from orchestrator.local.postgres_target import PostgresTarget

#: Width of the "who" column of progress lines (long enough for ``salesforce/oauth``).
WHO = 17
#: The identity the worker authenticates to ScaiVault as.
WORKER_IDENTITY = "sa:scaivault-rotator"

Echo = Callable[[str], None]


class Provisioning:
    """ScaiVault and Salesforce setup, routing rules and secrets of a running sandbox.

    A base of :class:`~orchestrator.local.sandbox.Sandbox`, which starts the processes and
    sets the attributes below; subclasses change the routing through :meth:`routing_rules`.
    """

    ends: Endpoints
    echo: Echo
    grace: str
    originals: dict[str, dict[str, Any]]
    rotation_policy: str
    postgres: PostgresTarget | None
    _admin: httpx.Client | None
    _salesforce: httpx.Client | None

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

    def postgres_rules(self) -> list[dict[str, Any]]:
        """One ``postgres-dual`` rule per app of the PostgreSQL part (none without one), for
        ``PREFIX/postgres/APP``."""
        if self.postgres is None:
            return []
        ends = self.ends
        return [
            self.postgres.rule(app, f"{ends.prefix}/postgres/{app}", self.grace, ends.pg_admin_path)
            for app in self.postgres.apps
        ]

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
            *self.postgres_rules(),
        ]

    def _configure_postgres(self) -> None:
        """Roles on the PostgreSQL part's server, and its admin credential in ScaiVault."""
        if self.postgres is None:
            return
        self.postgres.provision()
        self.originals[self.ends.pg_admin_path] = dict(self.postgres.admin)
        self.put(self.ends.pg_admin_path, self.postgres.admin, "PostgreSQL admin")
        self.echo(
            f"{'postgres':<{WHO}} private server on port {self.postgres.server.port}: admin role "
            f"and roles for {', '.join(self.postgres.apps)}"
        )

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

    def add_postgres(self, app: str, *, scheduled: bool = True) -> str:
        """``app``'s secret at ``PREFIX/postgres/APP``: its first role, password and server."""
        if self.postgres is None:
            raise StackError("this sandbox has no PostgreSQL part")
        path = f"{self.ends.prefix}/postgres/{app}"
        data = self.postgres.secret(app)
        self.originals[path] = data
        self.put(path, data, f"{app} PostgreSQL login (postgres-dual)")
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
