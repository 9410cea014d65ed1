"""``postgres-dual`` against the private PostgreSQL server: rotations alternate between two
roles with the old one working until finalize, ``in_use`` reports the old role's sessions from
``pg_stat_activity``, finalize and discard revoke only the exact credential, preflight says what
to grant, and the conformance kit (sessions included) passes with no secret in the server log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from rotators import PermanentError, SecretData
from rotators.postgres.dual import PostgresDualRotator
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


class Pair:
    """Two roles, an admin, the secret naming the first role, and contexts for the steps."""

    def __init__(self, pg: PgServer, *grants: str, **options: Any) -> None:
        self.pg = pg
        self.a, self.a_password = pg.role("app_a")
        self.b, self.b_password = pg.role("app_b")
        self.admin = pg.admin_role(*grants)
        self.vault = MemoryVault()
        self.vault.put(ADMIN_PATH, self.admin)
        self.data = {"username": self.a, "password": self.a_password, "dbname": "orders"}
        self.vault.put(PATH, self.data)
        self.options: dict[str, Any] = {
            "host": pg.host,
            "port": pg.port,
            "users": [self.a, self.b],
            "admin_secret_path": ADMIN_PATH,
            **options,
        }
        self.log = CapturingLog()
        self.rotator = PostgresDualRotator()

    def ctx(self) -> Any:
        return make_context(self.rotator, self.vault, PATH, self.options, log=self.log)

    def rotate(self) -> SecretData:
        """mint, verify and store (the engine's part) one rotation; the new data."""
        new = SecretData(self.rotator.mint(self.ctx()))
        self.rotator.verify(self.ctx(), new)
        self.vault.put(PATH, new)
        return new

    def works(self, data: Mapping[str, Any]) -> bool:
        return self.pg.accepts(str(data["username"]), str(data["password"]))


def test_rotations_alternate_and_the_old_role_works_until_finalize(
    postgres_server: PgServer,
) -> None:
    pair = Pair(postgres_server)
    old = pair.data
    new = pair.rotate()
    assert new["username"] == pair.b and new["dbname"] == "orders"
    assert pair.works(new) and pair.works(old), "both work through the grace period"

    pair.rotator.finalize(pair.ctx(), SecretData(old), new)
    assert pair.works(new) and not pair.works(old)
    assert not pair.works({"username": pair.a, "password": pair.a_password})

    newer = pair.rotate()  # the next rotation goes back to the first role, with a new password
    assert newer["username"] == pair.a and newer["password"] != pair.a_password
    assert pair.works(newer) and pair.works(new)
    events = [e["event"] for e in pair.log.events]
    assert events.count("postgres_dual_minted") == 2 and "postgres_password_revoked" in events


def test_in_use_reports_the_old_roles_sessions(postgres_server: PgServer) -> None:
    pg = postgres_server
    pair = Pair(pg, "pg_read_all_stats")
    old = SecretData(pair.data)
    new = pair.rotate()
    assert pair.rotator.in_use(pair.ctx(), old) == pair.rotator.in_use(pair.ctx(), old)
    assert pair.rotator.in_use(pair.ctx(), old).sessions == 0  # type: ignore[union-attr]

    with (
        pg.holding(pair.a, pair.a_password, "orders-api"),
        pg.holding(pair.b, new["password"]),
        pg.holding(pair.a, pair.a_password, "orders-worker"),
    ):
        usage = pair.rotator.in_use(pair.ctx(), old)
    assert usage is not None
    assert usage.sessions == 2 and usage.who == pair.a
    assert usage.clients == ("127.0.0.1",)
    assert usage.applications == ("orders-api", "orders-worker")
    assert usage.oldest is not None
    assert usage.summary().startswith(f"2 sessions of {pair.a} from 127.0.0.1 (orders-api, ")


def test_without_pg_read_all_stats_in_use_still_counts_sessions(postgres_server: PgServer) -> None:
    pg = postgres_server
    pair = Pair(pg)
    old = SecretData(pair.data)
    pair.rotate()
    with pg.holding(pair.a, pair.a_password, "orders-api"):
        usage = pair.rotator.in_use(pair.ctx(), old)
    assert usage is not None
    assert usage.sessions == 1 and usage.applications == ("orders-api",)
    assert usage.clients == () and usage.oldest is None, "hidden without pg_read_all_stats"


def test_finalize_is_repeatable_and_leaves_a_password_set_by_someone_else_alone(
    postgres_server: PgServer,
) -> None:
    pg = postgres_server
    pair = Pair(pg)
    old = SecretData(pair.data)
    new = pair.rotate()
    pair.rotator.finalize(pair.ctx(), old, new)
    pair.rotator.finalize(pair.ctx(), old, new)
    assert [e["event"] for e in pair.log.events][-2:] == [
        "postgres_password_revoked",
        "postgres_password_already_revoked",
    ]
    # Someone gives the old role a password of their own: finalize never touches it.
    pg.execute(f"ALTER ROLE {pair.a} PASSWORD 'SCRAM-SHA-256$4096:AA==$AA=:AA='")
    before = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (pair.a,))
    pair.rotator.finalize(pair.ctx(), old, new)
    after = pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (pair.a,))
    assert before == after

    with pytest.raises(PermanentError, match="same role"):
        pair.rotator.finalize(pair.ctx(), new, new)


def test_terminate_sessions_ends_the_old_roles_sessions(postgres_server: PgServer) -> None:
    pg = postgres_server
    pair = Pair(pg, "pg_signal_backend", terminate_sessions=True)
    pair.rotator.preflight(pair.ctx())
    old = SecretData(pair.data)
    new = pair.rotate()
    straggler = pg.connect(pair.a, pair.a_password, application_name="straggler")
    try:
        pair.rotator.finalize(pair.ctx(), old, new)
        assert pg.sessions(pair.a) == 0
        assert not pair.works(old)
    finally:
        straggler.close()
    ended = [e for e in pair.log.events if e["event"] == "postgres_sessions_ended"]
    assert ended and ended[0]["sessions"] == 1


def test_discard_revokes_only_the_minted_credential(postgres_server: PgServer) -> None:
    pair = Pair(postgres_server)
    new = SecretData(pair.rotator.mint(pair.ctx()))
    pair.rotator.discard(pair.ctx(), new)
    assert not pair.works(new) and pair.works(pair.data)
    pair.rotator.discard(pair.ctx(), new)  # already revoked: success


def test_preflight_says_what_is_missing(postgres_server: PgServer) -> None:
    pg = postgres_server
    pair = Pair(pg)
    pair.rotator.preflight(pair.ctx())
    assert [e["event"] for e in pair.log.events] == ["postgres_usage_limited"]
    assert pair.log.events[0]["fix"] == f"GRANT pg_read_all_stats TO {pair.admin['username']}"

    pair.options["users"] = [pair.a, "no_such_role"]
    with pytest.raises(PermanentError, match="role 'no_such_role' does not exist"):
        pair.rotator.preflight(pair.ctx())

    pair.options["users"] = [pair.b, "other_role"]
    with pytest.raises(PermanentError, match="not one of users"):
        pair.rotator.preflight(pair.ctx())

    pair = Pair(pg, "pg_read_all_stats", terminate_sessions=True)
    with pytest.raises(PermanentError, match="GRANT pg_signal_backend TO"):
        pair.rotator.preflight(pair.ctx())

    pair = Pair(pg)
    pair.options["users"] = [pair.a, pair.admin["username"]]
    with pytest.raises(PermanentError, match="authenticates with"):
        pair.rotator.preflight(pair.ctx())


def test_options_validate_the_pair() -> None:
    base = {"host": "db.internal", "admin_secret_path": ADMIN_PATH}
    with pytest.raises(ValueError, match="two different roles"):
        PostgresDualRotator.Options.model_validate({**base, "users": ["a", "a"]})
    with pytest.raises(ValueError, match="admin_secret_path"):
        PostgresDualRotator.Options.model_validate({"host": "db", "users": ["a", "b"]})


class DualTarget:
    """Conformance target: a fresh pair of roles per scenario, sessions opened on request."""

    def __init__(self, pg: PgServer, proxy: FaultProxy) -> None:
        self.pg = pg
        self.proxy = proxy
        self.admin = pg.admin_role("pg_read_all_stats")

    def setup(self) -> Scenario:
        a, password = self.pg.role("app_a")
        b, _ = self.pg.role("app_b")
        return Scenario(
            data={"username": a, "password": password, "note": "kept-field"},
            options={
                "host": self.proxy.host,
                "port": self.proxy.port,
                "connect_timeout": 2,
                "users": [a, b],
                "admin_secret_path": ADMIN_PATH,
            },
            path=PATH,
            vault_secrets={ADMIN_PATH: self.admin},
            public_fields=frozenset({"username"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.pg.accepts(str(data["username"]), str(data["password"]))

    def fault(self, kind: str) -> AbstractContextManager[None]:
        return self.proxy.fault(kind)

    @contextmanager
    def session(self, data: Mapping[str, Any]) -> Iterator[None]:
        with self.pg.holding(str(data["username"]), str(data["password"])):
            yield


def test_postgres_dual_passes_the_conformance_kit(postgres_server: PgServer) -> None:
    with FaultProxy((postgres_server.host, postgres_server.port)) as proxy:
        kit = Conformance(PostgresDualRotator, DualTarget(postgres_server, proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert kit.skipped == {}
    log = postgres_server.log_text()
    assert "SCRAM-SHA-256$4096:" in log, "the server log records the statements"
    leaked = [value for value in kit.sentinels if value in log]
    assert not leaked, f"{len(leaked)} secret value(s) in the PostgreSQL server log"
