"""``redis-acl`` against a private Redis with ACL users: the conformance kit in both modes
(crash injection included), ACL SAVE into the server's ACL file, who still uses the old user,
grants named when missing, and TLS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from orchestrator.local.processes import free_port
from rotators import PermanentError, SecretData, TransientError
from rotators.contract import MemoryNotes
from rotators.redis_acl import NOTE_MINTED, RedisAclRotator
from rotators.testing import Conformance, FaultProxy, MemoryVault, Scenario, make_context
from tests.fixtures.redis import AclRedis

pytestmark = pytest.mark.integration

ADMIN_PATH = "caches/redis/rotator-admin"
PATH = "caches/redis/app"
#: The rotator's timeouts behind a fault proxy: a fault that never answers ends in seconds.
FAULT_TIMEOUTS = {"connect_timeout": 2.0, "socket_timeout": 3.0}
#: What the rotated users may do: enough to hold a named connection.
USER_GRANTS = ("+ping", "+client|setname", "+get", "~app:*")


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class AclTarget:
    """The kit's target: fresh ACL users per scenario, one (``username``) or two (``users``).
    One user's two passwords cannot be told apart, so it opens no sessions for the kit. With
    a ``proxy`` in front of the server, the rotator goes through it (``fault``), with short
    timeouts so that a fault that never answers costs seconds."""

    def __init__(
        self,
        server: AclRedis,
        *,
        dual: bool,
        admin: Mapping[str, str] | None = None,
        proxy: FaultProxy | None = None,
    ):
        self.server = server
        self.dual = dual
        self.admin = dict(admin or server.admin)
        self.proxy = proxy

    def fault(self, kind: str) -> AbstractContextManager[None]:
        assert self.proxy is not None, "a target without a proxy injects no faults"
        return self.proxy.fault(kind)

    def setup(self, **options: Any) -> Scenario:
        login = self.server.create_user("app", *USER_GRANTS)
        if self.dual:
            standby = self.server.create_user("app", *USER_GRANTS)
            options.setdefault("users", [login["username"], standby["username"]])
        else:
            options.setdefault("username", login["username"])
        return Scenario(
            data={**login, "note": "kept by the rotation"},
            options={
                "host": "127.0.0.1",
                "port": self.proxy.port if self.proxy else self.server.port,
                "admin_secret_path": ADMIN_PATH,
                **(FAULT_TIMEOUTS if self.proxy else {}),
                **options,
            },
            path=PATH,
            vault_secrets={ADMIN_PATH: self.admin},
            public_fields=frozenset({"username", "note"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.server.accepts(str(data["username"]), str(data["password"]))


class AclPairTarget(AclTarget):
    """Two users alternately: the kit also holds sessions of a login (``check_in_use``)."""

    def __init__(
        self,
        server: AclRedis,
        admin: Mapping[str, str] | None = None,
        proxy: FaultProxy | None = None,
    ) -> None:
        super().__init__(server, dual=True, admin=admin, proxy=proxy)

    @contextmanager
    def session(self, data: Mapping[str, Any]) -> Iterator[None]:
        client = redis.Redis(
            port=self.server.port,
            username=str(data["username"]),
            password=str(data["password"]),
            client_name="billing-api",
        )
        client.ping()  # connects, authenticates and names the connection
        try:
            yield
        finally:
            client.close()


def context(scenario: Scenario, notes: MemoryNotes | None = None, **overrides: Any) -> Any:
    vault = MemoryVault()
    for path, data in scenario.vault_secrets.items():
        vault.put(path, data)
    vault.put(PATH, scenario.data)
    options = {**dict(scenario.options), **overrides}
    return make_context(RedisAclRotator, vault, PATH, options, notes=notes or MemoryNotes())


def test_one_user_with_two_passwords_passes_the_kit(acl_redis: AclRedis) -> None:
    with FaultProxy(("127.0.0.1", acl_redis.port)) as proxy:
        kit = Conformance(RedisAclRotator, AclTarget(acl_redis, dual=False, proxy=proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert kit.skipped == {}


def test_two_users_alternately_pass_the_kit_with_sessions(acl_redis: AclRedis) -> None:
    with FaultProxy(("127.0.0.1", acl_redis.port)) as proxy:
        kit = Conformance(RedisAclRotator, AclPairTarget(acl_redis, proxy=proxy))
        assert kit.run() == list(Conformance.CHECKS)
    assert kit.skipped == {}


def test_one_user_holds_both_passwords_through_grace(acl_redis: AclRedis) -> None:
    scenario = AclTarget(acl_redis, dual=False).setup()
    ctx = context(scenario)
    rotator = RedisAclRotator()
    new = SecretData(rotator.mint(ctx))
    old = SecretData(scenario.data)
    assert new["username"] == old["username"] and new["note"] == "kept by the rotation"
    assert acl_redis.accepts(old["username"], old["password"])
    assert acl_redis.accepts(new["username"], new["password"])
    assert rotator.in_use(ctx, old) is None, "one user's two passwords cannot be told apart"
    rotator.finalize(ctx, old, new)
    assert not acl_redis.accepts(old["username"], old["password"])
    assert acl_redis.accepts(new["username"], new["password"])
    user = acl_redis.command("ACL", "GETUSER", new["username"])
    assert user["passwords"] == [sha(new["password"])]


@pytest.mark.parametrize("dual", [False, True], ids=["one-user", "two-users"])
def test_a_mint_that_failed_leaves_no_unknown_password(acl_redis: AclRedis, dual: bool) -> None:
    scenario = AclTarget(acl_redis, dual=dual).setup(connect_timeout=2)
    notes = MemoryNotes()
    rotator = RedisAclRotator()
    first = SecretData(rotator.mint(context(scenario, notes=notes)))
    with pytest.raises(TransientError):
        rotator.mint(context(scenario, notes=notes, port=free_port()))
    # A mint whose ACL SETUSER reached the server but whose answer never came back.
    lost = "a-password-whose-mint-timed-out"
    acl_redis.command("ACL", "SETUSER", first["username"], f">{lost}")
    notes.put(NOTE_MINTED, f"{notes.get(NOTE_MINTED)},{sha(lost)[:16]}")
    third = SecretData(rotator.mint(context(scenario, notes=notes)))
    user = third["username"]
    assert notes.get(NOTE_MINTED) == sha(third["password"])[:16]
    held = acl_redis.command("ACL", "GETUSER", user)["passwords"]
    old = [] if dual else [sha(scenario.data["password"])]
    assert sorted(held) == sorted([*old, sha(third["password"])])
    assert not acl_redis.accepts(first["username"], first["password"])

    rotator.discard(context(scenario, notes=notes), third)
    held = acl_redis.command("ACL", "GETUSER", user)["passwords"]
    assert held == old


def test_acl_save_persists_each_change_in_the_acl_file(acl_redis: AclRedis) -> None:
    scenario = AclPairTarget(acl_redis).setup(acl_save=True)
    ctx = context(scenario)
    rotator = RedisAclRotator()
    new = SecretData(rotator.mint(ctx))
    saved = acl_redis.acl_file.read_text()
    assert f"#{sha(new['password'])}" in saved
    rotator.finalize(ctx, SecretData(scenario.data), new)
    saved = acl_redis.acl_file.read_text()
    assert f"#{sha(scenario.data['password'])}" not in saved
    assert new["password"] not in saved and scenario.data["password"] not in saved


def test_in_use_names_the_old_users_connections(acl_redis: AclRedis) -> None:
    target = AclPairTarget(acl_redis)
    scenario = target.setup()
    ctx = context(scenario)
    old = SecretData(scenario.data)
    assert RedisAclRotator().in_use(ctx, old).sessions == 0
    with target.session(old):
        usage = RedisAclRotator().in_use(ctx, old)
    assert usage.sessions == 1 and usage.who == old["username"]
    assert usage.clients == ("127.0.0.1",) and usage.applications == ("billing-api",)


def test_a_missing_grant_is_a_permanent_error_naming_it(acl_redis: AclRedis) -> None:
    grants = [g for g in AclRedis.ADMIN_GRANTS if g != "+client|list"]
    weak = acl_redis.create_user("weak_admin", *grants)
    target = AclPairTarget(acl_redis, admin=weak)
    scenario = target.setup()
    ctx = context(scenario)
    with pytest.raises(PermanentError, match=r"may not run client\|list") as err:
        RedisAclRotator().preflight(ctx)
    assert "+client|list" in str(err.value)
    with pytest.raises(PermanentError, match=r"client\|list"):
        RedisAclRotator().in_use(ctx, SecretData(scenario.data))
    for value in (weak["password"], scenario.data["password"]):
        assert value not in str(err.value)


def test_preflight_refuses_a_nopass_user_and_passes_a_good_rule(acl_redis: AclRedis) -> None:
    pair = AclPairTarget(acl_redis).setup(acl_save=True)
    RedisAclRotator().preflight(context(pair))  # every grant the rule needs is there
    scenario = AclTarget(acl_redis, dual=False).setup()
    RedisAclRotator().preflight(context(scenario))
    acl_redis.command("ACL", "SETUSER", scenario.data["username"], "nopass")
    with pytest.raises(PermanentError, match="nopass"):
        RedisAclRotator().preflight(context(scenario))


def test_the_admin_never_rotates_itself(acl_redis: AclRedis) -> None:
    scenario = AclTarget(acl_redis, dual=False).setup(username=acl_redis.admin["username"])
    scenario.data = {**scenario.data, "username": acl_redis.admin["username"]}
    ctx = context(scenario)
    with pytest.raises(PermanentError, match="separate admin account"):
        RedisAclRotator().mint(ctx)


def test_an_unknown_user_is_permanent_and_unreachable_is_transient(acl_redis: AclRedis) -> None:
    scenario = AclTarget(acl_redis, dual=True).setup()
    with pytest.raises(PermanentError, match="no ACL user"):
        RedisAclRotator().mint(context(scenario, users=[scenario.data["username"], "ghost"]))
    with pytest.raises(TransientError, match="unreachable"):
        RedisAclRotator().verify(context(scenario, port=free_port()), SecretData(scenario.data))


def test_tls_with_the_servers_ca_and_not_with_another(acl_redis: AclRedis, tmp_path: Path) -> None:
    scenario = AclPairTarget(acl_redis).setup()
    tls = {"port": acl_redis.tls_port, "tls": True, "ca_file": str(acl_redis.ca_file)}
    ctx = context(scenario, **tls)
    rotator = RedisAclRotator()
    new = SecretData(rotator.mint(ctx))
    rotator.verify(ctx, new)
    rotator.finalize(ctx, SecretData(scenario.data), new)
    assert acl_redis.accepts(new["username"], new["password"])

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(PermanentError, match="certificate is not trusted"):
        rotator.verify(context(scenario, **{**tls, "ca_file": str(other)}), new)


def test_verify_identity_refuses_a_certificate_for_another_name(
    acl_redis_named_otherwise: AclRedis,
) -> None:
    server = acl_redis_named_otherwise
    scenario = AclPairTarget(server).setup()
    tls = {"port": server.tls_port, "tls": True, "ca_file": str(server.ca_file)}
    with pytest.raises(PermanentError, match="does not name host"):
        RedisAclRotator().verify(context(scenario, **tls), SecretData(scenario.data))
    unchecked = context(scenario, **tls, verify_identity=False)
    RedisAclRotator().verify(unchecked, SecretData(scenario.data))


def test_options_take_one_mode() -> None:
    with pytest.raises(ValueError, match="exactly one of username"):
        RedisAclRotator.Options.model_validate({"host": "r", "admin_secret_path": "a"})
    with pytest.raises(ValueError, match="exactly one of username"):
        RedisAclRotator.Options.model_validate(
            {"host": "r", "admin_secret_path": "a", "username": "u", "users": ["a", "b"]}
        )
