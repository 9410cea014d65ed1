"""The chaos scenario's ``redis-acl`` target: a private Redis with an ACL file.

:class:`AclTarget` gives the rotator a least-privilege admin user and, per *app*, two ACL users
``APP_blue``/``APP_green`` used alternately (the first with a random password, sent as its
sha256 only, as the rotator does). It builds each app's routing rule and first secret, and opens
consumer connections the way an application would. The server is never restarted: it is the
target, not the stack.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from orchestrator.local.processes import RedisServer
from rotators.redis_acl import password_hash
from tests.fixtures.redis import logs_in

#: What the rotator's admin user may run (docs/writing-rotators.md, the built-ins table).
ADMIN_GRANTS = ("+acl|setuser", "+acl|getuser", "+acl|save", "+acl|dryrun", "+client|list")
#: What an app's users may run: enough to log in, name their connection and ping.
APP_GRANTS = ("+ping", "+client|setname")


def _password() -> str:
    return "acl-" + secrets.token_urlsafe(18)


class AclTarget:
    """ACL users and rules for ``redis-acl`` apps on one private Redis in ``directory``."""

    def __init__(self, directory: Path, apps: Sequence[str], recheck: str = "1s") -> None:
        self.acl_file = directory / "users.acl"
        self.server = RedisServer(
            directory, appendonly=False, extra=["--aclfile", str(self.acl_file)]
        )
        self.apps = list(apps)
        self.recheck = recheck
        self.admin = {"username": "rotator_admin", "password": _password()}
        self.first: dict[str, dict[str, str]] = {}

    def users(self, app: str) -> tuple[str, str]:
        """The two ACL users of ``app``."""
        return f"{app}_blue", f"{app}_green"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> AclTarget:
        """Start the server (with an empty ACL file) and create every user."""
        self.acl_file.parent.mkdir(parents=True, exist_ok=True)
        self.acl_file.touch()
        self.server.start()
        self._setuser(self.admin["username"], self.admin["password"], ADMIN_GRANTS)
        for app in self.apps:
            first, second = self.users(app)
            self.first[app] = {"username": first, "password": _password()}
            self._setuser(first, self.first[app]["password"], APP_GRANTS)
            self._setuser(second, _password(), APP_GRANTS)
        return self

    def stop(self) -> None:
        self.server.stop()

    def _setuser(self, user: str, password: str, grants: Sequence[str]) -> None:
        root = redis.Redis(port=self.server.port, decode_responses=True)  # ``default``: nopass
        digest = f"#{password_hash(password)}"
        try:
            root.execute_command("ACL", "SETUSER", user, "on", digest, *grants)
        finally:
            root.close()

    # --- rules and secrets -------------------------------------------------------------------

    def rule(self, app: str, match: str, grace: str, admin_path: str) -> dict[str, Any]:
        """The routing rule sending ``match`` to ``redis-acl`` over ``app``'s two users."""
        return {
            "match": match,
            "rotator": "redis-acl",
            "grace_period": grace,
            "finalize_recheck": self.recheck,
            "options": {
                "host": "127.0.0.1",
                "port": self.server.port,
                "users": list(self.users(app)),
                "admin_secret_path": admin_path,
                "acl_save": True,
                "connect_timeout": 2.0,
                "socket_timeout": 5.0,
            },
        }

    def secret(self, app: str) -> dict[str, Any]:
        """``app``'s first secret data: its first user and that user's password."""
        return dict(self.first[app])

    # --- consumers ---------------------------------------------------------------------------

    def connect(self, data: dict[str, Any], application_name: str) -> redis.Redis:
        """A consumer's connection with the login in ``data``, named ``application_name``."""
        client = redis.Redis(
            port=self.server.port,
            username=str(data["username"]),
            password=str(data["password"]),
            client_name=application_name,
            socket_timeout=5.0,
        )
        client.ping()
        return client

    def accepts(self, data: dict[str, Any]) -> bool:
        """Does the server let the login in ``data`` in? (Raises if it does not answer.)"""
        username, password = str(data.get("username", "")), str(data.get("password", ""))
        return logs_in(self.server.url, username, password, socket_timeout=5.0)
