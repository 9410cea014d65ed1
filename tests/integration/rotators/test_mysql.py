"""``mysql-password`` and ``mysql-dual`` against the session's private MariaDB: the conformance
kit (crash injection included), the plaintext never in the general or slow query log, grants
named when missing, TLS, and who still uses the old account."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pymysql
import pytest
import trustme

from orchestrator.local.processes import free_port
from rotators import PermanentError, SecretData, TransientError
from rotators.mysql import MysqlDualRotator, MysqlPasswordRotator
from rotators.mysql.server import native_hash
from rotators.testing import Conformance, FaultProxy, MemoryVault, Scenario, make_context
from tests.fixtures.mariadb import MariaDB, unique_user

pytestmark = pytest.mark.integration

ADMIN_PATH = "databases/mysql/rotator-admin"
PATH = "databases/mysql/app"


def password() -> str:
    return f"SENTINEL-{secrets.token_urlsafe(18)}"


class Accounts:
    """Accounts a test created, dropped at its end."""

    def __init__(self, db: MariaDB) -> None:
        self.db = db
        self.users: list[str] = []

    def create(self, prefix: str, *grants: str, require_ssl: bool = False) -> dict[str, str]:
        user, secret = unique_user(prefix), password()
        self.db.create_account(user, secret, *grants)
        if require_ssl:
            self.db.execute("ALTER USER %s@'%%' REQUIRE SSL", (user,))
        self.users.append(user)
        return {"username": user, "password": secret}

    def drop(self) -> None:
        for user in self.users:
            self.db.drop_account(user)


@pytest.fixture
def accounts(mariadb: MariaDB) -> Iterator[Accounts]:
    made = Accounts(mariadb)
    yield made
    made.drop()


def base_options(db: MariaDB, proxy: FaultProxy | None = None, **more: Any) -> dict[str, Any]:
    """The server, or the ``proxy`` in front of it with short timeouts: a fault that never
    answers then costs seconds (PyMySQL waits for the server's greeting ``read_timeout``)."""
    if proxy is not None:
        timeouts = {"connect_timeout": 2.0, "read_timeout": 3.0}
        return {"host": proxy.host, "port": proxy.port, **timeouts, **more}
    return {"host": "127.0.0.1", "port": db.port, "connect_timeout": 10.0, **more}


class FaultyTarget:
    """A kit target whose rotator reaches the server through an optional :class:`FaultProxy`."""

    proxy: FaultProxy | None = None

    def fault(self, kind: str) -> AbstractContextManager[None]:
        assert self.proxy is not None, "a target without a proxy injects no faults"
        return self.proxy.fault(kind)


class MysqlTarget(FaultyTarget):
    """The kit's target for ``mysql-password``: a fresh account per scenario."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        admin: bool = True,
        proxy: FaultProxy | None = None,
        **options: Any,
    ) -> None:
        self.accounts = accounts
        self.admin = accounts.create("admin", "CREATE USER") if admin else None
        self.proxy = proxy
        self.options = options

    def setup(self) -> Scenario:
        login = self.accounts.create("app")
        options = base_options(
            self.accounts.db, self.proxy, username=login["username"], **self.options
        )
        vault = {}
        if self.admin is not None:
            options["admin_secret_path"] = ADMIN_PATH
            vault[ADMIN_PATH] = self.admin
        return Scenario(
            data={**login, "note": "kept by the rotation"},
            options=options,
            path=PATH,
            vault_secrets=vault,
            public_fields=frozenset({"username", "note"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.accounts.db.accepts(str(data["username"]), str(data["password"]))


class MysqlDualTarget(FaultyTarget):
    """The kit's target for ``mysql-dual``: two fresh accounts per scenario, sessions held."""

    def __init__(
        self,
        accounts: Accounts,
        admin_grants: tuple[str, ...] = ("CREATE USER", "PROCESS"),
        proxy: FaultProxy | None = None,
    ):
        self.accounts = accounts
        self.admin = accounts.create("admin", *admin_grants)
        self.proxy = proxy

    def setup(self) -> Scenario:
        blue, green = self.accounts.create("blue"), self.accounts.create("green")
        users = [blue["username"], green["username"]]
        options = base_options(
            self.accounts.db, self.proxy, users=users, admin_secret_path=ADMIN_PATH
        )
        return Scenario(
            data={**blue, "note": "kept by the rotation"},
            options=options,
            path=PATH,
            vault_secrets={ADMIN_PATH: self.admin},
            public_fields=frozenset({"username", "note"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.accounts.db.accepts(str(data["username"]), str(data["password"]))

    @contextmanager
    def session(self, data: Mapping[str, Any]) -> Iterator[None]:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.accounts.db.port,
            user=str(data["username"]),
            password=str(data["password"]),
        )
        try:
            yield
        finally:
            conn.close()


def assert_not_in_server_logs(db: MariaDB, kit: Conformance) -> None:
    """No plaintext the kit saw is in the general or slow query log, which did log the
    statements (with the hashes)."""
    assert kit.sentinels
    for log in (db.general_log, db.slow_log):
        text = log.read_text(errors="replace")
        assert "IDENTIFIED WITH mysql_native_password AS '*" in text, f"{log.name} is on"
        for value in kit.sentinels:
            assert value not in text, f"a plaintext ({len(value)} chars) is in {log.name}"


def test_mysql_password_with_an_admin_passes_the_kit(mariadb: MariaDB, accounts: Accounts) -> None:
    with FaultProxy(("127.0.0.1", mariadb.port)) as proxy:
        kit = Conformance(MysqlPasswordRotator, MysqlTarget(accounts, proxy=proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert sorted(kit.skipped) == ["check_discard", "check_in_use"], "an updater has neither"
    assert_not_in_server_logs(mariadb, kit)


def test_mysql_password_changing_its_own_passes_the_kit(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    with FaultProxy(("127.0.0.1", mariadb.port)) as proxy:
        kit = Conformance(MysqlPasswordRotator, MysqlTarget(accounts, admin=False, proxy=proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert sorted(kit.skipped) == ["check_discard", "check_in_use"], "an updater has neither"
    assert_not_in_server_logs(mariadb, kit)


def test_mysql_dual_passes_the_kit_and_tells_who_uses_the_old_account(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    with FaultProxy(("127.0.0.1", mariadb.port)) as proxy:
        kit = Conformance(MysqlDualRotator, MysqlDualTarget(accounts, proxy=proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert kit.skipped == {}
    assert_not_in_server_logs(mariadb, kit)


def test_the_logs_hold_only_the_hash_of_a_minted_password(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    target = MysqlDualTarget(accounts)
    scenario = target.setup()
    vault = MemoryVault()
    for path, data in scenario.vault_secrets.items():
        vault.put(path, data)
    vault.put(PATH, scenario.data)
    ctx = make_context(MysqlDualRotator, vault, PATH, scenario.options)
    new = MysqlDualRotator().mint(ctx)
    assert new["note"] == "kept by the rotation" and new["username"] != scenario.data["username"]
    logs = mariadb.logs()
    assert native_hash(new["password"]) in logs
    assert new["password"] not in logs


def dual_context(scenario: Scenario, **overrides: Any) -> Any:
    vault = MemoryVault()
    for path, data in scenario.vault_secrets.items():
        vault.put(path, data)
    vault.put(PATH, scenario.data)
    options = {**dict(scenario.options), **overrides}
    return make_context(MysqlDualRotator, vault, PATH, options)


def test_in_use_names_the_old_accounts_sessions_and_client_hosts(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    target = MysqlDualTarget(accounts)
    scenario = target.setup()
    ctx = dual_context(scenario)
    rotator = MysqlDualRotator()
    assert rotator.in_use(ctx, SecretData(scenario.data)).sessions == 0
    with target.session(scenario.data), target.session(scenario.data):
        usage = rotator.in_use(ctx, SecretData(scenario.data))
    assert usage.sessions == 2 and usage.who == scenario.data["username"]
    assert usage.clients == ("127.0.0.1", "127.0.0.1")
    assert usage.summary().startswith(f"2 sessions of {scenario.data['username']} from 127.0.0.1")


def test_a_missing_grant_is_a_permanent_error_naming_it(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    no_process = MysqlDualTarget(accounts, admin_grants=("CREATE USER",))
    scenario = no_process.setup()
    ctx = dual_context(scenario)
    with pytest.raises(PermanentError, match="lacks the global PROCESS privilege") as err:
        MysqlDualRotator().preflight(ctx)
    assert "GRANT PROCESS ON *.* TO" in str(err.value)
    with pytest.raises(PermanentError, match="PROCESS"):
        MysqlDualRotator().in_use(ctx, SecretData(scenario.data))

    no_create = MysqlDualTarget(accounts, admin_grants=("PROCESS",))
    scenario = no_create.setup()
    ctx = dual_context(scenario)
    with pytest.raises(PermanentError, match="CREATE USER"):
        MysqlDualRotator().preflight(ctx)
    with pytest.raises(PermanentError, match="lacks the CREATE USER privilege") as err:
        MysqlDualRotator().mint(ctx)
    for value in (scenario.data["password"], no_create.admin["password"]):
        assert value not in f"{err.value} {err.value!r}"


def test_preflight_passes_with_the_grants_and_changes_nothing(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    target = MysqlDualTarget(accounts)
    scenario = target.setup()
    MysqlDualRotator().preflight(dual_context(scenario))
    assert target.is_valid(scenario.data)


def test_a_missing_standby_account_is_permanent(mariadb: MariaDB, accounts: Accounts) -> None:
    scenario = MysqlDualTarget(accounts).setup()
    ctx = dual_context(scenario, users=[scenario.data["username"], unique_user("ghost")])
    with pytest.raises(PermanentError, match="no such account"):
        MysqlDualRotator().mint(ctx)


def test_a_username_outside_the_rule_is_refused(mariadb: MariaDB, accounts: Accounts) -> None:
    scenario = MysqlDualTarget(accounts).setup()
    ctx = dual_context(scenario, users=["someone", "else"])
    with pytest.raises(PermanentError, match="not one of the rule's users"):
        MysqlDualRotator().mint(ctx)


def test_an_unreachable_server_is_transient(mariadb: MariaDB, accounts: Accounts) -> None:
    scenario = MysqlDualTarget(accounts).setup()
    ctx = dual_context(scenario, port=free_port())
    with pytest.raises(TransientError, match="unreachable"):
        MysqlDualRotator().verify(ctx, SecretData(scenario.data))


def test_tls_with_the_servers_ca_rotates_an_account_that_requires_it(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    target = MysqlDualTarget(accounts)
    scenario = target.setup()
    for user in scenario.options["users"]:
        mariadb.execute("ALTER USER %s@'%%' REQUIRE SSL", (user,))
    mariadb.execute("ALTER USER %s@'%%' REQUIRE SSL", (target.admin["username"],))
    tls = {"tls": True, "ca_file": str(mariadb.ca_file)}

    ctx = dual_context(scenario, **tls)
    rotator = MysqlDualRotator()
    new = SecretData(rotator.mint(ctx))
    rotator.verify(ctx, new)
    rotator.finalize(ctx, SecretData(scenario.data), new)


def test_tls_refuses_a_server_certificate_from_another_ca(
    mariadb: MariaDB, accounts: Accounts, tmp_path: Any
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    scenario = MysqlDualTarget(accounts).setup()
    ctx = dual_context(scenario, tls=True, ca_file=str(other))
    with pytest.raises(PermanentError, match="certificate is not trusted"):
        MysqlDualRotator().verify(ctx, SecretData(scenario.data))


def test_verify_identity_refuses_a_certificate_that_does_not_name_the_host(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    # The server listens on 127.0.0.2 too; its certificate names 127.0.0.1 and localhost only.
    scenario = MysqlDualTarget(accounts).setup()
    tls = {"host": "127.0.0.2", "tls": True, "ca_file": str(mariadb.ca_file)}
    with pytest.raises(PermanentError, match="does not name host"):
        MysqlDualRotator().verify(dual_context(scenario, **tls), SecretData(scenario.data))
    unchecked = dual_context(scenario, **tls, verify_identity=False)
    MysqlDualRotator().verify(unchecked, SecretData(scenario.data))


def test_options_refuse_a_ca_file_without_tls_and_one_user_twice() -> None:
    with pytest.raises(ValueError, match="tls = true"):
        MysqlPasswordRotator.Options.model_validate(
            {"host": "db", "username": "app", "ca_file": __file__}  # a file that exists
        )
    with pytest.raises(ValueError, match="two different"):
        MysqlDualRotator.Options.model_validate(
            {"host": "db", "users": ["app", "app"], "admin_secret_path": "x"}
        )


def password_context(scenario: Scenario) -> Any:
    vault = MemoryVault()
    for path, data in scenario.vault_secrets.items():
        vault.put(path, data)
    vault.put(PATH, scenario.data)
    return make_context(MysqlPasswordRotator, vault, PATH, scenario.options)


def test_mysql_password_preflight_names_a_missing_grant(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    good = MysqlTarget(accounts).setup()
    MysqlPasswordRotator().preflight(password_context(good))
    MysqlPasswordRotator().preflight(password_context(MysqlTarget(accounts, admin=False).setup()))

    weak = MysqlTarget(accounts)
    mariadb.execute("REVOKE CREATE USER ON *.* FROM %s@'%%'", (weak.admin["username"],))
    scenario = weak.setup()
    with pytest.raises(PermanentError, match="lacks the global CREATE USER privilege"):
        MysqlPasswordRotator().preflight(password_context(scenario))
    rotator, ctx = MysqlPasswordRotator(), password_context(scenario)
    with pytest.raises(PermanentError, match="CREATE USER"):
        rotator.apply(ctx, SecretData(rotator.mint(ctx)))
    assert weak.is_valid(scenario.data), "nothing changed"


def test_account_host_rotates_only_that_account(mariadb: MariaDB, accounts: Accounts) -> None:
    admin = accounts.create("admin", "CREATE USER")
    user, everywhere, local = unique_user("hosted"), password(), password()
    mariadb.create_account(user, everywhere)  # 'user'@'%'
    mariadb.create_account(user, local, host="127.0.0.1")  # what a login from here matches
    try:
        vault = MemoryVault()
        vault.put(ADMIN_PATH, admin)
        vault.put(PATH, {"username": user, "password": local})
        options = base_options(
            mariadb, username=user, account_host="127.0.0.1", admin_secret_path=ADMIN_PATH
        )
        ctx = make_context(MysqlPasswordRotator, vault, PATH, options)
        rotator = MysqlPasswordRotator()
        new = SecretData(rotator.mint(ctx))
        rotator.apply(ctx, new)
        rotator.verify(ctx, new)
        hashes = dict(
            mariadb.execute(
                "SELECT Host, authentication_string FROM mysql.user WHERE User = %s", (user,)
            )
        )
        assert hashes == {"%": native_hash(everywhere), "127.0.0.1": native_hash(new["password"])}
    finally:
        mariadb.drop_account(user, host="127.0.0.1")
        mariadb.drop_account(user)


def test_an_admin_repairs_a_password_that_drifted_from_scaivault(
    mariadb: MariaDB, accounts: Accounts
) -> None:
    """Someone changed the account's password by hand: with an admin the rotation still mints,
    applies and verifies, and what ScaiVault then holds logs in again."""
    scenario = MysqlTarget(accounts).setup()
    user = scenario.data["username"]
    mariadb.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, password()))
    assert not mariadb.accepts(user, scenario.data["password"]), "the password drifted"
    rotator, ctx = MysqlPasswordRotator(), password_context(scenario)
    new = SecretData(rotator.mint(ctx))
    rotator.apply(ctx, new)
    rotator.verify(ctx, new)
    assert mariadb.accepts(user, new["password"])
