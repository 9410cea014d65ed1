"""The sandbox's PostgreSQL target: pairs of roles for ``postgres-dual`` on a private server.

:class:`PostgresTarget` sets up, through the server's superuser, a least-privilege admin role
(``CREATEROLE`` and ``pg_read_all_stats``: what ``postgres-dual`` needs) and, per *app*, two
login roles ``APP_a``/``APP_b`` with random passwords (sent as SCRAM verifiers, so no plaintext
reaches the server log). It builds the routing rule of each app, the first secret of each, and
opens consumer connections the way an application would. It needs psycopg (the ``postgres``
extra); the server is a :class:`~orchestrator.local.postgres_server.PostgresServer`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.local.postgres_server import PostgresServer

#: The admin role's name on the sandbox's server.
ADMIN_ROLE = "scaivault_rotator_admin"


def _password() -> str:
    return "pg-" + secrets.token_urlsafe(18)


class PostgresTarget:
    """Roles and rules for ``postgres-dual`` apps on one running private server."""

    def __init__(self, server: PostgresServer, apps: Sequence[str], recheck: str = "2s") -> None:
        self.server = server
        self.apps = list(apps)
        self.recheck = recheck
        self.admin = {"username": f"{ADMIN_ROLE}_{secrets.token_hex(3)}", "password": _password()}
        self.first: dict[str, dict[str, str]] = {}

    def users(self, app: str) -> tuple[str, str]:
        """The two roles of ``app``."""
        return f"{app}_a", f"{app}_b"

    # --- setup -------------------------------------------------------------------------------

    def provision(self) -> None:
        """Create the admin role and every app's two roles (each with a random password)."""
        with self._superuser() as conn:
            admin = self.admin["username"]
            self._create(conn, admin, self.admin["password"], "LOGIN CREATEROLE")
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(admin)))
            for app in self.apps:
                first, second = self.users(app)
                self.first[app] = {"username": first, "password": _password()}
                self._create(conn, first, self.first[app]["password"], "LOGIN")
                self._create(conn, second, _password(), "LOGIN")

    def _create(self, conn: psycopg.Connection[Any], role: str, password: str, attrs: str) -> None:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("CREATE ROLE {} " + attrs + " PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode("ascii"))
            )
        )

    def rule(self, app: str, match: str, grace: str, admin_path: str) -> dict[str, Any]:
        """The routing rule sending ``match`` to ``postgres-dual`` over ``app``'s roles."""
        return {
            "match": match,
            "rotator": "postgres-dual",
            "grace_period": grace,
            "finalize_recheck": self.recheck,
            "options": {
                "host": self.server.host,
                "port": self.server.port,
                "dbname": "postgres",
                "users": list(self.users(app)),
                "admin_secret_path": admin_path,
            },
        }

    def secret(self, app: str) -> dict[str, Any]:
        """``app``'s first secret data: its first role, its password, where the server is."""
        return {**self.first[app], "host": self.server.host, "port": self.server.port}

    # --- consumers ---------------------------------------------------------------------------

    def connect(self, data: dict[str, Any], application_name: str) -> psycopg.Connection[Any]:
        """A consumer's connection with the login in ``data`` (as an application opens one)."""
        conn = psycopg.connect(
            host=self.server.host,
            port=self.server.port,
            dbname="postgres",
            user=str(data["username"]),
            password=str(data["password"]),
            application_name=application_name,
            connect_timeout=10,
            autocommit=True,
        )
        conn.execute("SELECT 1")
        return conn

    def accepts(self, data: dict[str, Any]) -> bool:
        """Does the server let the login in ``data`` in?"""
        try:
            self.connect(data, "scaivault-demo-check").close()
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return False
            raise
        return True

    def _superuser(self) -> psycopg.Connection[Any]:
        su = self.server.superuser
        return psycopg.connect(
            host=self.server.host,
            port=self.server.port,
            dbname="postgres",
            user=su.username,
            password=su.password,
            autocommit=True,
            connect_timeout=10,
        )
