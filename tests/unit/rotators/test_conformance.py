"""The conformance kit passes our built-in rotators and catches rotators that break the rules."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from rotators import (
    CredentialRejected,
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
from rotators.testing import Conformance, ConformanceError, ConformanceSkipped, Scenario
from tests.fixtures.salesforce import FakeSalesforce, SalesforceTarget


def test_salesforce_oauth_passes_the_kit(salesforce_target: SalesforceTarget) -> None:
    kit = Conformance(SalesforceOAuthRotator, salesforce_target)
    assert kit.run() == list(Conformance.CHECKS)
    assert set(kit.skipped) == {"check_preflight", "check_in_use"}


def test_salesforce_oauth_passes_the_kit_with_propagation_delay(
    salesforce: FakeSalesforce, salesforce_target: SalesforceTarget
) -> None:
    salesforce.configure(propagation_delay=0.3)
    kit = Conformance(SalesforceOAuthRotator, salesforce_target)
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


class ServerError(Exception):
    """What the toy key server's client raises for a 5xx answer."""


ADMIN = "toy/admin"


class KeyServer:
    """An in-memory API with named keys: the target of the toy rotators. ``fault(kind)`` makes
    its API (not the kit's ``is_valid`` view) fail as a network would."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.failing: str | None = None
        self.answering = threading.Event()  # cleared while a fault holds calls unanswered
        self.answering.set()

    def setup(self) -> Scenario:
        name, value = f"key_{secrets.token_hex(4)}", secrets.token_hex(16)
        self.keys[name] = value
        return Scenario(
            data={"key_name": name, "api_key": value, "owner": "team-a"},
            options={},
            vault_secrets={ADMIN: {"token": secrets.token_hex(8)}},
            public_fields=frozenset({"key_name", "owner"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.keys.get(str(data.get("key_name"))) == data.get("api_key")

    def snapshot(self) -> object:
        return frozenset(self.keys)

    @contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        self.failing = kind
        self.answering.clear()
        try:
            yield
        finally:
            self.failing = None
            self.answering.set()

    # the API the rotators call; ``timeout=None`` is a client without one
    def _network(self, timeout: float | None = 1.0) -> None:
        if self.failing == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.failing == "timeout":
            if timeout is None and self.answering.wait():
                raise ConnectionResetError(104, "Connection reset by peer")
            raise TimeoutError("timed out")
        if self.failing == "5xx":
            raise ServerError("503 Service Unavailable")

    def issue(self, name: str) -> str:
        self._network()
        return self.keys.setdefault(name, secrets.token_hex(16))

    def accepts(self, data: Mapping[str, Any], timeout: float | None = 1.0) -> bool:
        self._network(timeout)
        return self.is_valid(data)

    def revoke(self, name: str) -> None:
        self._network()
        self.keys.pop(name, None)

    def exists(self, name: str) -> bool:
        self._network()
        return name in self.keys


SERVER = KeyServer()


def call(request: Any) -> Any:
    """The toy's one place where the server's errors become the rotators' errors."""
    try:
        return request()
    except (OSError, ServerError) as exc:
        raise TransientError(f"the key server cannot be reached ({type(exc).__name__})") from None


class ApiKeyRotator(Rotator):
    """A correct issuer: one key per rotation_id, revocation by name, a read-only preflight."""

    name = "toy-api-key"
    strategy = "issuer"
    can_discard = True

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        value = call(lambda: SERVER.issue(name))
        ctx.log.info("key_minted", key_name=name)
        return {**ctx.current.data, "key_name": name, "api_key": value}

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not call(lambda: SERVER.accepts(new)):
            raise CredentialRejected("the key server refuses the new key")

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        call(lambda: SERVER.revoke(str(old["key_name"])))

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        call(lambda: SERVER.revoke(str(new["key_name"])))

    def preflight(self, ctx: RotationContext) -> None:
        ctx.vault.read(ADMIN)
        if not call(lambda: SERVER.exists(str(ctx.current.data["key_name"]))):
            raise PermanentError("the current key does not exist at the key server")


class FreshKeyEachMint(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{secrets.token_hex(4)}"
        SERVER.keys[name] = secrets.token_hex(16)
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.keys[name]}


class ReplacesItsKey(ApiKeyRotator):
    """Correct: one key slot per rotation whose value a repeated mint replaces (as a database
    password set again does), so the first value no longer works."""

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        call(lambda: SERVER.revoke(name))
        value = call(lambda: SERVER.issue(name))
        return {**ctx.current.data, "key_name": name, "api_key": value}


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


class RefusedKeyIsTransient(ApiKeyRotator):
    """A refused key is "not yet propagated", forever."""

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not call(lambda: SERVER.accepts(new)):
            raise TransientError("the key server does not accept the new key yet")


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


class DiscardsTheOld(ApiKeyRotator):
    """Revokes the key of ``ctx.current`` (the one every consumer uses) instead of ``new``."""

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        call(lambda: SERVER.revoke(str(ctx.current.data["key_name"])))


class DiscardsNothing(ApiKeyRotator):
    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        ctx.log.info("key_discarded", key_name=new["key_name"])


class DiscardsAStranger(ApiKeyRotator):
    """Revokes the new key, then one that is neither the old nor the new (a wrong id in a
    cleanup loop): the old key keeps working, someone else's does not."""

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        super().discard(ctx, new)
        keep = {str(ctx.current.data["key_name"]), str(new["key_name"])}
        stranger = next((name for name in SERVER.keys if name not in keep), None)
        if stranger is not None:
            call(lambda: SERVER.revoke(stranger))


class DiscardsOnce(ApiKeyRotator):
    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        if str(new["key_name"]) not in SERVER.keys:
            raise PermanentError("no such key")
        super().discard(ctx, new)


class CannotDiscard(ApiKeyRotator):
    """Correct: says it cannot withdraw a key (as salesforce-oauth does for a promoted pair)."""

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        raise PermanentError("the key server cannot withdraw a key; it stays valid")


class LetsNetworkErrorsOut(ApiKeyRotator):
    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        return {**ctx.current.data, "key_name": name, "api_key": SERVER.issue(name)}


class PermanentOn5xx(ApiKeyRotator):
    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        try:
            accepted = SERVER.accepts(new)
        except ServerError:
            raise PermanentError("the key server failed") from None
        except OSError as exc:
            raise TransientError(type(exc).__name__) from None
        if not accepted:
            raise CredentialRejected("refused")


class LeaksWhenUnreachable(ApiKeyRotator):
    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        try:
            SERVER.revoke(str(old["key_name"]))
        except (OSError, ServerError):
            raise TransientError(f"could not revoke {old['api_key']}") from None


class NoTimeout(ApiKeyRotator):
    """Asks the key server without a timeout: a server that never answers holds verify."""

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not call(lambda: SERVER.accepts(new, timeout=None)):
            raise CredentialRejected("the key server refuses the new key")


class FinalizeSwallowsErrors(ApiKeyRotator):
    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        try:
            super().finalize(ctx, old, new)
        except TransientError:
            ctx.log.warning("revoke_failed")


class PreflightMints(ApiKeyRotator):
    def preflight(self, ctx: RotationContext) -> None:
        call(lambda: SERVER.issue(f"key_probe_{ctx.rotation_id}"))


class PreflightNotes(ApiKeyRotator):
    def preflight(self, ctx: RotationContext) -> None:
        super().preflight(ctx)
        ctx.notes.put("preflight", "ok")


class PreflightIgnoresTheVault(ApiKeyRotator):
    def preflight(self, ctx: RotationContext) -> None:
        with contextlib.suppress(PermanentError):
            ctx.vault.read(ADMIN)


class RemembersItsKey(ApiKeyRotator):
    """Correct: a random key name per rotation, found again after a crash through ctx.notes."""

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = ctx.notes.get("key_name")
        if ctx.attempt == 1 and name is not None:
            raise PermanentError("a new rotation starts with another rotation's notes")
        if name is None:
            name = f"key_{secrets.token_hex(4)}"
            ctx.notes.put("key_name", name)  # before the key exists: a crash finds it again
        value = call(lambda: SERVER.issue(str(name)))
        return {**ctx.current.data, "key_name": name, "api_key": value}


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

    def sessions_of(self, name: str) -> int:
        self._network()
        return self.sessions.count(name)


SESSIONS = SessionKeyServer()


class TellsUsage(Rotator):
    """A correct issuer on SESSIONS that tells how many sessions still use the old key."""

    name = "toy-sessions"
    strategy = "issuer"
    can_discard = True

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        name = f"key_{ctx.rotation_id}"
        value = call(lambda: SESSIONS.issue(name))
        return {**ctx.current.data, "key_name": name, "api_key": value}

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        if not call(lambda: SESSIONS.accepts(new)):
            raise CredentialRejected("the key server refuses the new key")

    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        count = call(lambda: SESSIONS.sessions_of(str(old["key_name"])))
        return Usage(sessions=count, who=str(old["key_name"]), clients=("10.0.0.1",) * count)

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        call(lambda: SESSIONS.revoke(str(old["key_name"])))

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        call(lambda: SESSIONS.revoke(str(new["key_name"])))


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


class AnswersNothingWhenUnreachable(TellsUsage):
    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        try:
            return super().in_use(ctx, old)
        except TransientError:
            return None


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


def test_the_kit_catches_in_use_answering_nothing_when_the_target_is_unreachable() -> None:
    """None would let finalize revoke a credential that may still be in use."""
    kit = Conformance(AnswersNothingWhenUnreachable, SESSIONS)
    with pytest.raises(ConformanceError, match="in_use succeeded while the target refuses"):
        kit.check_network_faults()


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
    kit = Conformance(ApiKeyRotator, SERVER)
    assert kit.run() == list(Conformance.CHECKS)
    assert kit.skipped == {"check_in_use": "the rotator has no in_use"}


def test_a_rotator_that_says_it_cannot_discard_passes() -> None:
    Conformance(CannotDiscard, SERVER).check_discard()


def test_the_kit_says_which_checks_it_skipped_and_warns_of_gaps() -> None:
    class NoFaults:
        setup = SERVER.setup
        is_valid = SERVER.is_valid

    kit = Conformance(ApiKeyRotator, NoFaults())
    with pytest.warns(ConformanceSkipped, match="check_network_faults skipped: the target"):
        kit.check_network_faults()
    assert "no fault(kind)" in kit.skipped["check_network_faults"]
    quiet = Conformance(RandomPasswordRotator, PasswordPolicyTarget())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.run()
    assert set(quiet.skipped) == {
        "check_discard", "check_network_faults", "check_preflight", "check_in_use"
    }  # fmt: skip


def test_the_kit_fails_a_step_that_waits_forever_for_the_target() -> None:
    kit = Conformance(NoTimeout, SERVER, step_timeout=0.5)
    with pytest.raises(ConformanceError, match=r"verify was still running after 0\.5s") as err:
        kit.check_network_faults()
    assert "never answers: a worker would hang" in str(err.value)
    assert "Give every call to the target a timeout and raise TransientError" in str(err.value)
    assert SERVER.failing is None and SERVER.answering.is_set()  # the fault was released


def test_strict_fails_an_adapter_without_fault() -> None:
    class NoFaults:
        setup = SERVER.setup
        is_valid = SERVER.is_valid

    kit = Conformance(LetsNetworkErrorsOut, NoFaults(), strict=True)
    with pytest.raises(ConformanceError, match=r"check_network_faults: .*no fault.*strict=True"):
        kit.check_network_faults()
    assert kit.skipped == {}
    vault_only = Conformance(RandomPasswordRotator, PasswordPolicyTarget(), strict=True)
    vault_only.check_network_faults()  # calls no target: nothing to fault
    assert "check_network_faults" in vault_only.skipped


def test_a_repeated_mint_may_replace_the_first_credential() -> None:
    assert Conformance(ReplacesItsKey, SERVER).run() == list(Conformance.CHECKS)


def test_notes_last_for_one_rotation_across_its_crashes() -> None:
    kit = Conformance(RemembersItsKey, SERVER)
    assert kit.run() == list(Conformance.CHECKS)
    names = [notes.get("key_name") for notes in kit.notes]
    assert all(names) and len(set(names)) == len(names)  # one key per rotation, kept


@pytest.mark.parametrize(
    ("rotator", "check", "complaint"),
    [
        (FreshKeyEachMint, "check_idempotent_steps", "the first still works"),
        (DropsFields, "check_idempotent_steps", "dropped fields"),
        (LogsTheKey, "check_no_secret_leaks", "appears in logging"),
        (LeaksInErrors, "check_no_secret_leaks", "appears in exceptions"),
        (AcceptsAnything, "check_verify_rejects_wrong", "accepted a wrong credential"),
        (FinalizeOnce, "check_finalize_repeatable", "finalize raised KeyError"),
        (RevokesAtMint, "check_idempotent_steps", "refuses the old credential"),
        (NeverRevokes, "check_crash_resume", "still accepts the old credential"),
        (NotesTheKey, "check_no_secret_leaks", "appears in notes"),
        (RefusedKeyIsTransient, "check_verify_rejects_permanently", "still raised TransientError"),
        (DiscardsTheOld, "check_discard", "refuses the old credential after discard"),
        (DiscardsNothing, "check_discard", "still accepts the new credential after discard"),
        (DiscardsOnce, "check_discard", "a second discard raised PermanentError"),
        (DiscardsAStranger, "check_discard", "discard removed 1 other credential"),
        (LetsNetworkErrorsOut, "check_network_faults", "mint let ConnectionRefusedError escape"),
        (
            PermanentOn5xx,
            "check_network_faults",
            "verify raised PermanentError while the target answers",
        ),
        (LeaksWhenUnreachable, "check_network_faults", "message holds a secret value"),
        (
            FinalizeSwallowsErrors,
            "check_network_faults",
            "finalize succeeded while",
        ),
        (PreflightMints, "check_preflight", "preflight changed the target"),
        (PreflightNotes, "check_preflight", "preflight wrote a note"),
        (PreflightIgnoresTheVault, "check_preflight", "preflight passed with 'toy/admin' missing"),
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
        with pytest.warns(ConformanceSkipped, match="check_network_faults"):
            assert Conformance(AclPasswordRotator, target).run()
    finally:
        for user in target.users:
            redis_client.execute_command("ACL", "DELUSER", user)
