"""The conformance kit passes our built-in rotators and catches rotators that break the rules."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from rotators import (
    PermanentError,
    RotationContext,
    Rotator,
    SecretData,
    TransientError,
    Usage,
)
from rotators.passwords import policy_problem
from rotators.random_password import RandomPasswordOptions, RandomPasswordRotator
from rotators.salesforce_oauth import SalesforceOAuthRotator
from rotators.testing import Conformance, ConformanceError, Scenario
from tests.fixtures.salesforce import FakeSalesforce, SalesforceTarget


def test_salesforce_oauth_passes_the_kit(salesforce: FakeSalesforce) -> None:
    assert Conformance(SalesforceOAuthRotator, SalesforceTarget(salesforce)).run()


def test_salesforce_oauth_passes_the_kit_with_propagation_delay(
    salesforce: FakeSalesforce,
) -> None:
    salesforce.configure(propagation_delay=0.3)
    kit = Conformance(SalesforceOAuthRotator, SalesforceTarget(salesforce))
    kit.check_crash_resume()
    kit.check_no_secret_leaks()


class PasswordPolicyTarget:
    """random-password is vault-only: "valid at the target" means "meets the policy"."""

    options = RandomPasswordOptions(length=24)

    def setup(self) -> Scenario:
        password = "".join(secrets.choice("abcXYZ123!") for _ in range(23)) + "a"
        return Scenario(
            data={"username": "app-user", "password": password},
            options={"length": 24},
            public_fields=frozenset({"username"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return policy_problem(data.get("password"), self.options) is None


def test_random_password_passes_the_kit() -> None:
    assert Conformance(RandomPasswordRotator, PasswordPolicyTarget()).run()


# --- a toy issuer, and broken variants the kit must reject -------------------------------


class KeyServer:
    """An in-memory API with named keys: the target of the toy rotators."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def setup(self) -> Scenario:
        name, value = f"key_{secrets.token_hex(4)}", secrets.token_hex(16)
        self.keys[name] = value
        return Scenario(
            data={"key_name": name, "api_key": value, "owner": "team-a"},
            options={},
            public_fields=frozenset({"key_name", "owner"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.keys.get(str(data.get("key_name"))) == data.get("api_key")


SERVER = KeyServer()


class ApiKeyRotator(Rotator):
    """A correct issuer: one key per rotation_id, revocation by name."""

    name = "toy-api-key"
    strategy = "issuer"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        if name not in SERVER.keys:
            SERVER.keys[name] = secrets.token_hex(16)
        ctx.log.info("key_minted", key_name=name)
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.keys[name]}

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not SERVER.is_valid(new):
            raise TransientError("the new key is not accepted")

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        SERVER.keys.pop(str(old["key_name"]), None)


class FreshKeyEachMint(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{secrets.token_hex(4)}"
        SERVER.keys[name] = secrets.token_hex(16)
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.keys[name]}


class LogsTheKey(ApiKeyRotator):
    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        logging.getLogger("toy").debug("verifying %s", new["api_key"])
        super().verify(ctx, new)


class LeaksInErrors(ApiKeyRotator):
    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not SERVER.is_valid(new):
            raise PermanentError(f"key {new['api_key']} refused")


class AcceptsAnything(ApiKeyRotator):
    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        pass


class FinalizeOnce(ApiKeyRotator):
    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        del SERVER.keys[str(old["key_name"])]  # KeyError when already revoked


class RevokesAtMint(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        SERVER.keys.pop(str(ctx.current.data["key_name"]), None)
        return super().mint(ctx)


class DropsFields(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        new = super().mint(ctx)
        del new["owner"]
        return new


class NeverRevokes(ApiKeyRotator):
    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        pass


class RemembersItsKey(ApiKeyRotator):
    """Correct: a random key name per rotation, found again after a crash through ctx.notes."""

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = ctx.notes.get("key_name")
        if ctx.attempt == 1 and name is not None:
            raise PermanentError("a new rotation starts with another rotation's notes")
        if name is None:
            name = f"key_{secrets.token_hex(4)}"
            SERVER.keys[name] = secrets.token_hex(16)
            ctx.notes.put("key_name", name)
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.keys[name]}


class ReplacesItsKey(ApiKeyRotator):
    """Correct: a second mint of the same rotation revokes the key the first one created (found
    through ctx.notes) and creates another: never two new keys left valid."""

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        earlier = ctx.notes.get("key_name")
        if earlier is not None:
            SERVER.keys.pop(earlier, None)
        name = f"key_{secrets.token_hex(4)}"
        ctx.notes.put("key_name", name)
        SERVER.keys[name] = secrets.token_hex(16)
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.keys[name]}


def test_an_issuer_whose_second_mint_replaces_the_first_passes() -> None:
    assert Conformance(ReplacesItsKey, SERVER).run() == list(Conformance.CHECKS)


class NotesTheKey(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        new = super().mint(ctx)
        ctx.notes.put("minted", str(new["api_key"]))
        return new


class SessionKeyServer(KeyServer):
    """The key server where clients hold sessions opened with a key (``session``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[str] = []  # the key name each open session authenticated with

    @contextmanager
    def session(self, data: Mapping[str, Any]) -> Iterator[None]:
        assert self.is_valid(data)
        self.sessions.append(str(data["key_name"]))
        try:
            yield
        finally:
            self.sessions.remove(str(data["key_name"]))


SESSIONS = SessionKeyServer()


class TellsUsage(Rotator):
    """A correct issuer on SESSIONS that tells how many sessions still use the old key."""

    name = "toy-sessions"
    strategy = "issuer"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        SESSIONS.keys.setdefault(name, secrets.token_hex(16))
        return {**ctx.current.data, "key_name": name, "api_key": SESSIONS.keys[name]}

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not SESSIONS.is_valid(new):
            raise TransientError("the new key is not accepted")

    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        count = SESSIONS.sessions.count(str(old["key_name"]))
        return Usage(sessions=count, who=str(old["key_name"]), clients=("10.0.0.1",) * count)

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        SESSIONS.keys.pop(str(old["key_name"]), None)


class CountsEverySession(TellsUsage):
    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        return Usage(sessions=len(SESSIONS.sessions))


class NeverSeesSessions(TellsUsage):
    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        return Usage(sessions=0)


class RevokesWhenAsked(TellsUsage):
    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        SESSIONS.keys.pop(str(old["key_name"]), None)
        return Usage(sessions=0)


class AnswersWithACount(TellsUsage):
    def in_use(self, ctx: RotationContext, old: SecretData) -> Any:
        return 0


def test_a_rotator_that_tells_usage_passes_the_kit() -> None:
    assert Conformance(TellsUsage, SESSIONS).run() == list(Conformance.CHECKS)
    assert not SESSIONS.sessions


@pytest.mark.parametrize(
    ("rotator", "complaint"),
    [
        (CountsEverySession, "reported 1 sessions with only the new credential in use"),
        (NeverSeesSessions, "reported 0 sessions with a session of the old credential open"),
        (RevokesWhenAsked, "refuses the old credential after in_use"),
        (AnswersWithACount, "returned a int, not a Usage"),
    ],
)
def test_the_kit_catches_a_wrong_in_use(rotator: type[Rotator], complaint: str) -> None:
    kit = Conformance(rotator, SESSIONS, verify_timeout=0.3)
    with pytest.raises(ConformanceError, match=complaint):
        kit.check_in_use()


def test_usage_says_who_in_one_line() -> None:
    usage = Usage(
        sessions=3,
        who="app_a",
        clients=("10.0.4.7", "10.0.4.9", "10.0.4.7"),
        applications=("api",),
        oldest=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert usage.summary() == (
        "3 sessions of app_a from 10.0.4.7, 10.0.4.9 (api), oldest since 2026-01-02T03:04:05+00:00"
    )
    assert Usage(sessions=1).summary() == "1 session"
    many = Usage(sessions=9, clients=tuple(f"10.0.0.{i}" for i in range(9)))
    assert many.summary(limit=2) == "9 sessions from 10.0.0.0, 10.0.0.1 and 7 more"
    with pytest.raises(ValueError, match="count of sessions"):
        Usage(sessions=-1)


def test_a_correct_toy_rotator_passes() -> None:
    assert Conformance(ApiKeyRotator, SERVER).run() == list(Conformance.CHECKS)


def test_notes_last_for_one_rotation_across_its_crashes() -> None:
    kit = Conformance(RemembersItsKey, SERVER)
    assert kit.run() == list(Conformance.CHECKS)
    names = [notes.get("key_name") for notes in kit.notes]
    assert all(names) and len(set(names)) == len(names)  # one key per rotation, kept


@pytest.mark.parametrize(
    ("rotator", "check", "complaint"),
    [
        (FreshKeyEachMint, "check_idempotent_steps", "still accepts the first of two values"),
        (DropsFields, "check_idempotent_steps", "dropped fields"),
        (LogsTheKey, "check_no_secret_leaks", "appears in logging"),
        (LeaksInErrors, "check_no_secret_leaks", "appears in exceptions"),
        (AcceptsAnything, "check_verify_rejects_wrong", "accepted a wrong credential"),
        (FinalizeOnce, "check_finalize_repeatable", "finalize raised KeyError"),
        (RevokesAtMint, "check_idempotent_steps", "refuses the old credential"),
        (NeverRevokes, "check_crash_resume", "still accepts the old credential"),
        (NotesTheKey, "check_no_secret_leaks", "appears in notes"),
    ],
)
def test_the_kit_catches_broken_rotators(
    rotator: type[Rotator], check: str, complaint: str
) -> None:
    kit = Conformance(rotator, SERVER, verify_timeout=0.5)
    with pytest.raises(ConformanceError, match=complaint) as err:
        if check == "check_no_secret_leaks":
            kit.check_verify_rejects_wrong()
        getattr(kit, check)()
    for value in kit.sentinels:
        assert value not in str(err.value)


class RedisAclTarget:
    """A Redis ACL user per scenario: the target of the test-only ``acl-password`` updater."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url
        self.users: list[str] = []

    def setup(self) -> Scenario:
        user, password = f"kit_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.client.execute_command(
            "ACL", "SETUSER", user, "on", f">{password}", "+ping", "+acl|setuser"
        )
        self.users.append(user)
        return Scenario(
            data={"username": user, "password": password},
            options={"redis_url": self.url},
            public_fields=frozenset({"username"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        from tests.rotators.acl_password import accepts

        return accepts(self.url, str(data["username"]), str(data["password"]))


@pytest.mark.integration
def test_an_updater_passes_the_kit(redis_client: Any, redis_url: str) -> None:
    from tests.rotators.acl_password import AclPasswordRotator

    target = RedisAclTarget(redis_client, redis_url)
    try:
        assert Conformance(AclPasswordRotator, target).run()
    finally:
        for user in target.users:
            redis_client.execute_command("ACL", "DELUSER", user)
