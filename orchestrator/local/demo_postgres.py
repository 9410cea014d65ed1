"""The demo's PostgreSQL part: a ``postgres-dual`` secret with a connected consumer.

When the server binaries and psycopg are there, the demo starts a private server
(:class:`~orchestrator.local.postgres_server.PostgresServer`, its log in the demo's folder), gives
the sandbox a :class:`~orchestrator.local.postgres_target.PostgresTarget` for the app ``orders``,
and a consumer (``orders-api``) connects as ``orders_a``. The rotation switches the secret to
``orders_b``; when grace is over, finalize finds ``orders-api`` still on ``orders_a`` and waits.
The consumer then does what an application does on its next credential refresh: it reads the
secret from ScaiVault and reconnects with it, and finalize revokes ``orders_a``'s password. When
the binaries or psycopg are missing, :func:`postgres_part` says why the part is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import StackError
from orchestrator.local.postgres_server import INSTALL_HINT, PostgresServer, find_bindir
from orchestrator.local.provisioning import WHO
from orchestrator.state.records import RunRecord

if TYPE_CHECKING:
    from orchestrator.local.postgres_target import PostgresTarget
    from orchestrator.local.sandbox import Sandbox

#: The demo's PostgreSQL app (roles ``orders_a`` and ``orders_b``) and its consumer's name.
APP = "orders"
CONSUMER = "orders-api"

Say = Callable[[str], None]


def postgres_part(workdir: Path) -> tuple[PostgresTarget | None, str]:
    """The demo's PostgreSQL target on a new (not yet started) server, or None and why not."""
    bindir = find_bindir()
    if bindir is None:
        return None, INSTALL_HINT
    try:
        from orchestrator.local.postgres_target import PostgresTarget
    except ModuleNotFoundError:
        return None, "psycopg is not installed: pip install 'scaivault-rotator[postgres]'"
    server = PostgresServer(bindir, log_path=workdir / "postgres.log")
    return PostgresTarget(server, [APP], recheck="2s"), ""


def start_server(box: Sandbox, say: Say) -> None:
    """Start the target's server (stopped with the sandbox); on failure, drop the part."""
    target = box.postgres
    if target is None:
        return
    box.stack.add(target.server)
    try:
        target.server.start()
    except StackError as exc:
        box.postgres = None
        say(f"{'postgres':<{WHO}} skipped: the private server did not start ({exc})")
        return
    say(f"{'postgres':<{WHO}} private PostgreSQL on port {target.server.port} (scram-sha-256)")


class Consumer:
    """An application connected as the secret's first role, moving when finalize waits."""

    def __init__(self, box: Sandbox, path: str, say: Say) -> None:
        self.box = box
        self.path = path
        self.say = say
        self.target = _target(box)
        data = box.originals[path]
        self.conn = self.target.connect(data, CONSUMER)
        self.role = str(data["username"])
        self.saw_wait = False
        say(f"{CONSUMER:<{WHO}} connected to PostgreSQL as {self.role}")

    def poll(self, records: dict[str, RunRecord | None]) -> None:
        """Once finalize waits for it, reconnect with what ScaiVault holds now."""
        record = records.get(self.path)
        if self.saw_wait or record is None or record.state != "grace" or not record.waiting:
            return
        self.saw_wait = True
        data = self.box.read(self.path)["data"]
        fresh = self.target.connect(data, CONSUMER)
        self.conn.close()
        self.conn, self.role = fresh, str(data["username"])
        self.say(f"{CONSUMER:<{WHO}} re-read the secret and reconnected as {self.role}")

    def close(self) -> None:
        self.conn.close()


def check(
    box: Sandbox, consumer: Consumer, old: dict[str, Any], new: dict[str, Any]
) -> list[tuple[str, bool]]:
    """The PostgreSQL outcome checks: (name, passed) pairs."""
    target = _target(box)
    name = consumer.path.removeprefix(box.ends.prefix + "/")
    first, second = target.users(APP)
    return [
        (
            f"{name}: ScaiVault names {second}, whose new password logs in",
            new.get("username") == second and target.accepts(new),
        ),
        (f"{name}: {first}'s old password is refused", not target.accepts(old)),
        (f"{name}: finalize waited while {CONSUMER} was connected as {first}", consumer.saw_wait),
    ]


def _target(box: Sandbox) -> PostgresTarget:
    if box.postgres is None:
        raise StackError("the sandbox has no PostgreSQL part")
    return box.postgres
