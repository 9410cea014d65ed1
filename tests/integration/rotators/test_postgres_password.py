"""``postgres-password`` against the private PostgreSQL server: the password changes in place (by
an admin or by the role itself), only a SCRAM verifier reaches the server log, identifiers are
quoted, errors map to the contract without driver text, preflight says what to grant, and the
conformance kit passes in both modes."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import pytest
from psycopg import sql

from orchestrator.local.processes import free_port
from rotators import PermanentError, SecretData, TransientError
from rotators.postgres.password import PostgresPasswordRotator
from rotators.testing import (
    CapturingLog,
    Conformance,
    FaultProxy,
    MemoryVault,
    Scenario,
    make_context,
)
from tests.fixtures.postgres import PgServer

pytestmark = pytest.mark.integration

PATH = "db/orders/app"
ADMIN_PATH = "db/orders/admin"


class Rotation:
    """One role's secret in a MemoryVault, and contexts for the rotator's steps."""

    def __init__(self, pg: PgServer, admin: dict[str, str] | None = None, **options: Any) -> None:
        self.pg = pg
        self.role, self.password = pg.role()
        self.vault = MemoryVault()
        self.data = {"username": self.role, "password": self.password, "dbname": "orders"}
        self.vault.put(PATH, self.data)
        self.options: dict[str, Any] = {"host": pg.host, "port": pg.port, **options}
        if admin is not None:
            self.vault.put(ADMIN_PATH, admin)
            self.options["admin_secret_path"] = ADMIN_PATH
        self.log = CapturingLog()
        self.rotator = PostgresPasswordRotator()

    def ctx(self, rotation_id: str = "rot_pg") -> Any:
        return make_context(
            self.rotator, self.vault, PATH, self.options, rotation_id=rotation_id, log=self.log
        )

    def rotate(self) -> SecretData:
        new = SecretData(self.rotator.mint(self.ctx()))
        self.rotator.apply(self.ctx(), new)
        self.rotator.verify(self.ctx(), new)
        return new

    def events(self) -> list[str]:
        return [str(e["event"]) for e in self.log.events]

    def unminted(self) -> SecretData:
        """New data as ``mint`` returns it, for ``apply`` where ``mint``'s own preflight would
        already stop the rotation; ``mint`` must refuse it too (PermanentError)."""
        with pytest.raises(PermanentError):
            self.rotator.mint(self.ctx())
        current = self.vault.read(PATH).data
        return SecretData({**current, "password": "new-" + secrets.token_urlsafe(18)})


@pytest.fixture
def admin(postgres_server: PgServer) -> dict[str, str]:
    return postgres_server.admin_role()


def assert_clean(error: BaseException, *values: str) -> None:
    """No value in the error's text or anything chained to it."""
    chained = [error.__cause__, None if error.__suppress_context__ else error.__context__]
    text = " ".join([str(error), repr(error), *(repr(c) for c in chained if c is not None)])
    for value in values:
        assert value not in text


def test_the_admin_changes_the_password_in_place_and_only_a_verifier_is_logged(
    postgres_server: PgServer, admin: dict[str, str]
) -> None:
    pg = postgres_server
    rotation = Rotation(pg, admin)
    new = rotation.rotate()
    assert new["username"] == rotation.role and new["dbname"] == "orders"
    assert new["password"] != rotation.password and len(new["password"]) == 32
    assert pg.accepts(rotation.role, new["password"])
    assert not pg.accepts(rotation.role, rotation.password), "in place: the old one is gone"
    assert rotation.events() == ["postgres_password_set", "postgres_login_verified"]

    log = pg.log_text()
    assert f'ALTER ROLE "{rotation.role}" PASSWORD \'SCRAM-SHA-256$4096:' in log
    for value in (new["password"], rotation.password, admin["password"]):
        assert value not in log


def test_the_role_changes_its_own_password_and_a_resumed_apply_is_a_no_op(
    postgres_server: PgServer,
) -> None:
    pg = postgres_server
    rotation = Rotation(pg)
    new = rotation.rotate()
    assert pg.accepts(rotation.role, new["password"])
    assert not pg.accepts(rotation.role, rotation.password)

    # A resumed rotation: ScaiVault still holds the old password, the server has the new one.
    rotation.rotator.apply(rotation.ctx(), new)
    assert rotation.events()[-1] == "postgres_password_already_set"
    assert pg.accepts(rotation.role, new["password"])
    for value in (new["password"], rotation.password):
        assert value not in pg.log_text()


def test_neither_password_working_is_permanent_and_says_what_to_do(
    postgres_server: PgServer,
) -> None:
    pg = postgres_server
    rotation = Rotation(pg)
    other_password = "pw-" + secrets.token_urlsafe(18)  # set by someone, told to nobody
    pg.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(rotation.role), sql.Literal(verifier(pg, rotation.role, other_password))
        )
    )
    new = rotation.unminted()
    with pytest.raises(PermanentError, match="accepts neither the current nor the new") as info:
        rotation.rotator.apply(rotation.ctx(), new)
    assert_clean(info.value, other_password, rotation.password, new["password"])
    assert pg.accepts(rotation.role, other_password), "nothing was changed"


def verifier(pg: PgServer, role: str, password: str) -> str:
    """``password``'s SCRAM verifier, as a client computes it (never the plaintext in SQL)."""
    with pg.admin() as conn:
        made = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return made.decode()


@pytest.mark.parametrize("prefix", ['Odd "Name"; DROP ROLE x; --', "UPPER case"])
def test_role_names_are_quoted_identifiers(
    postgres_server: PgServer, admin: dict[str, str], prefix: str
) -> None:
    pg = postgres_server
    rotation = Rotation(pg, admin)
    rotation.role, rotation.password = pg.role(prefix)
    rotation.vault.put(PATH, {"username": rotation.role, "password": rotation.password})
    new = rotation.rotate()
    assert pg.accepts(rotation.role, new["password"])
    self_rotation = Rotation(pg)
    self_rotation.role, self_rotation.password = pg.role(prefix)
    data = {"username": self_rotation.role, "password": self_rotation.password}
    self_rotation.vault.put(PATH, data)
    assert pg.accepts(self_rotation.role, self_rotation.rotate()["password"])


class SilentServer:
    """A TCP port that accepts connections and never answers (a hung server)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_unreachable_and_hung_servers_are_transient(
    postgres_server: PgServer, silent_server: SilentServer
) -> None:
    rotation = Rotation(postgres_server)
    new = SecretData(rotation.rotator.mint(rotation.ctx()))
    for port, reason in ((free_port(), "connection refused"), (silent_server.port, "timed out")):
        rotation.options.update(port=port, connect_timeout=2)
        with pytest.raises(TransientError, match=reason) as info:
            rotation.rotator.apply(rotation.ctx(), new)
        assert_clean(info.value, rotation.password, new["password"])


def test_too_many_connections_is_transient(postgres_server: PgServer) -> None:
    pg = postgres_server
    rotation = Rotation(pg)
    new = rotation.rotate()
    pg.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(rotation.role)))
    with pytest.raises(TransientError, match="too many connections") as info:
        rotation.rotator.verify(rotation.ctx(), new)
    assert_clean(info.value, new["password"])


def test_admin_errors_are_permanent_and_say_what_to_grant(
    postgres_server: PgServer, admin: dict[str, str]
) -> None:
    pg = postgres_server
    rotation = Rotation(pg, {**admin, "password": "not-" + admin["password"]})
    new = rotation.unminted()
    with pytest.raises(PermanentError, match=f"refuses the admin credential at {ADMIN_PATH}") as i:
        rotation.rotator.apply(rotation.ctx(), new)
    assert_clean(i.value, admin["password"], new["password"])

    weak = pg.role("weak")
    rotation = Rotation(pg, {"username": weak[0], "password": weak[1]})
    new = rotation.unminted()
    with pytest.raises(PermanentError, match=f"ALTER ROLE {weak[0]} CREATEROLE") as i:
        rotation.rotator.apply(rotation.ctx(), new)
    assert "SQLSTATE" not in str(i.value) or "42501" in str(i.value)
    assert_clean(i.value, weak[1], new["password"])

    rotation = Rotation(pg, admin)
    missing = {"username": "no_such_role", "password": "whatever-password"}
    rotation.vault.put(PATH, missing)
    new = rotation.unminted()
    with pytest.raises(PermanentError, match="role 'no_such_role' does not exist") as i:
        rotation.rotator.apply(rotation.ctx(), new)
    assert_clean(i.value, new["password"], admin["password"])


def test_it_refuses_to_rotate_its_own_admin(
    postgres_server: PgServer, admin: dict[str, str]
) -> None:
    rotation = Rotation(postgres_server, admin)
    rotation.vault.put(PATH, admin)
    with pytest.raises(PermanentError, match="authenticates with"):
        rotation.rotator.apply(rotation.ctx(), SecretData({**admin, "password": "x" * 20}))
    rotation.options["admin_secret_path"] = PATH
    with pytest.raises(PermanentError, match="self-rotation"):
        rotation.rotator.apply(rotation.ctx(), SecretData({**admin, "password": "x" * 20}))


def test_preflight_checks_the_login_role_and_the_admin_grants(
    postgres_server: PgServer, admin: dict[str, str]
) -> None:
    pg = postgres_server
    Rotation(pg).rotator.preflight(Rotation(pg).ctx())  # the role itself: its password works
    rotation = Rotation(pg, admin)
    rotation.rotator.preflight(rotation.ctx())

    superuser, _ = pg.role("super", "LOGIN SUPERUSER")
    rotation.vault.put(PATH, {"username": superuser, "password": "irrelevant-here"})
    with pytest.raises(PermanentError, match="is a superuser: only a superuser"):
        rotation.rotator.preflight(rotation.ctx())

    nologin, _ = pg.role("nologin", "NOLOGIN")
    rotation.vault.put(PATH, {"username": nologin, "password": "irrelevant-here"})
    with pytest.raises(PermanentError, match=f"ALTER ROLE {nologin} LOGIN"):
        rotation.rotator.preflight(rotation.ctx())

    weak = pg.role("weak")
    rotation = Rotation(pg, {"username": weak[0], "password": weak[1]})
    with pytest.raises(PermanentError, match="lacks CREATEROLE"):
        rotation.rotator.preflight(rotation.ctx())

    rotation.options["port"] = free_port()
    with pytest.raises(TransientError, match="connection refused"):
        rotation.rotator.preflight(rotation.ctx())
    assert pg.accepts(rotation.role, rotation.password), "preflight changed nothing"


class PasswordTarget:
    """Conformance target: a fresh role per scenario, set by ``admin`` or by itself."""

    def __init__(self, pg: PgServer, admin: dict[str, str] | None, proxy: FaultProxy) -> None:
        self.pg = pg
        self.admin = admin
        self.proxy = proxy

    def setup(self) -> Scenario:
        role, password = self.pg.role()
        options: dict[str, Any] = {
            "host": self.proxy.host,
            "port": self.proxy.port,
            "connect_timeout": 2,
        }
        vault: dict[str, Mapping[str, Any]] = {}
        if self.admin is not None:
            options["admin_secret_path"] = ADMIN_PATH
            vault[ADMIN_PATH] = self.admin
        return Scenario(
            data={"username": role, "password": password, "note": "kept-field"},
            options=options,
            path=PATH,
            vault_secrets=vault,
            public_fields=frozenset({"username"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.pg.accepts(str(data["username"]), str(data["password"]))

    def fault(self, kind: str) -> AbstractContextManager[None]:
        return self.proxy.fault(kind)


@pytest.mark.parametrize("by_admin", [True, False], ids=["admin", "the role itself"])
def test_postgres_password_passes_the_conformance_kit(
    postgres_server: PgServer, admin: dict[str, str], by_admin: bool
) -> None:
    with FaultProxy((postgres_server.host, postgres_server.port)) as proxy:
        target = PasswordTarget(postgres_server, admin if by_admin else None, proxy)
        kit = Conformance(PostgresPasswordRotator, target)
        assert kit.run() == list(Conformance.CHECKS)
    assert sorted(kit.skipped) == ["check_discard", "check_in_use"], "an updater has neither"
    log = postgres_server.log_text()
    assert "SCRAM-SHA-256$4096:" in log, "the server log records the statements"
    leaked = [value for value in kit.sentinels if value in log]
    assert not leaked, f"{len(leaked)} secret value(s) in the PostgreSQL server log"
