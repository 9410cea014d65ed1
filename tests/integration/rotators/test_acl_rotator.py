"""The test-only ACL updater against the real test Redis: apply, re-apply, verify, lock-out checks.

Also proves the two things the engine's seal crash test builds on: a process SIGKILLed while
held right after ``apply`` leaves a target that the *new* value opens, and re-running ``apply``
with that value is a harmless no-op; and fake ``*.dist-info`` entry points register the rotator
in a child process.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.local.processes import ChildProcess, free_port
from rotators import (
    CredentialRejected,
    PermanentError,
    RotationContext,
    SecretData,
    SecretVersion,
    TransientError,
)
from rotators.testing import Conformance, Scenario
from tests.rotators.acl_password import AclPasswordOptions, AclPasswordRotator, accepts
from tests.rotators.hook import reached_key, release_key

pytestmark = pytest.mark.integration


class ListLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    debug = info = warning = error = _add


class NoVault:
    def read(self, path: str, version: int | None = None) -> SecretVersion:
        raise AssertionError("acl-password never reads ScaiVault")


def make_ctx(data: dict[str, Any], options: AclPasswordOptions, rotation_id: str = "rot_1") -> Any:
    return RotationContext(
        path="apps/cache",
        rotation_id=rotation_id,
        current=SecretVersion(path="apps/cache", version=1, data=SecretData(data)),
        options=options,
        log=ListLog(),
        vault=NoVault(),
    )


@pytest.fixture
def acl_user(redis_client: redis.Redis) -> Iterator[dict[str, str]]:
    """A Redis ACL user that may change its own password; its current secret data."""
    user = f"rot_{secrets.token_hex(4)}"
    password = f"SENTINEL-old-{secrets.token_hex(8)}"
    redis_client.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "+ping", "+acl|setuser"
    )
    yield {"username": user, "password": password, "note": "kept"}
    redis_client.execute_command("ACL", "DELUSER", user)


@pytest.fixture
def options(redis_url: str) -> AclPasswordOptions:
    return AclPasswordOptions(redis_url=redis_url)


def test_mint_apply_verify_changes_the_password_in_place(
    acl_user: dict[str, str], options: AclPasswordOptions
) -> None:
    rotator = AclPasswordRotator()
    ctx = make_ctx(acl_user, options)
    new = SecretData(rotator.mint(ctx))
    assert new["username"] == acl_user["username"] and new["note"] == "kept"
    assert new["password"] != acl_user["password"]
    with pytest.raises(CredentialRejected):  # not applied: refused, finally
        rotator.verify(ctx, new)
    rotator.apply(ctx, new)
    rotator.verify(ctx, new)
    assert not accepts(options.redis_url, acl_user["username"], acl_user["password"])
    assert accepts(options.redis_url, acl_user["username"], new["password"])
    rotator.finalize(ctx, SecretData(acl_user), new)  # in place: nothing to revoke
    assert accepts(options.redis_url, acl_user["username"], new["password"])


def test_apply_again_after_a_crash_is_a_no_op(
    acl_user: dict[str, str], options: AclPasswordOptions
) -> None:
    rotator = AclPasswordRotator()
    ctx = make_ctx(acl_user, options)
    new = SecretData(rotator.mint(ctx))
    rotator.apply(ctx, new)
    again = make_ctx(acl_user, options)  # a resumed rotation still reads the old version
    rotator.apply(again, new)
    assert [e for e, _ in again.log.events] == ["acl_password_already_applied"]
    rotator.verify(again, new)


def test_neither_password_works_is_permanent_and_names_no_secret(
    acl_user: dict[str, str], options: AclPasswordOptions, redis_client: redis.Redis
) -> None:
    outsider = f"SENTINEL-outsider-{secrets.token_hex(8)}"
    redis_client.execute_command(
        "ACL", "SETUSER", acl_user["username"], "resetpass", f">{outsider}"
    )
    rotator = AclPasswordRotator()
    ctx = make_ctx(acl_user, options)
    new = SecretData(rotator.mint(ctx))
    with pytest.raises(PermanentError) as info:
        rotator.apply(ctx, new)
    text = f"{info.value!s} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    for value in (outsider, acl_user["password"], new["password"]):
        assert value not in text
    assert info.value.step == "apply"
    assert accepts(options.redis_url, acl_user["username"], outsider)


def test_unreachable_target_is_transient(acl_user: dict[str, str]) -> None:
    options = AclPasswordOptions(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(TransientError, match="unreachable"):
        AclPasswordRotator().verify(make_ctx(acl_user, options), SecretData(acl_user))


def test_options_refuse_credentials_in_the_url() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        AclPasswordOptions(redis_url="redis://user:pw@127.0.0.1:6379/0")


def apply_in_child() -> None:
    """Entry of the child process below: mint+apply with a hold right after apply."""
    spec = json.loads(os.environ["ACL_TEST_SPEC"])
    options = AclPasswordOptions(**spec["options"])
    ctx = make_ctx(spec["current"], options, rotation_id=spec["rotation_id"])
    AclPasswordRotator().apply(ctx, SecretData(spec["new"]))


def test_sigkill_held_after_apply_resumes_with_the_same_value_without_lockout(
    acl_user: dict[str, str], redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    options = AclPasswordOptions(redis_url=redis_url, signal_url=redis_url, hold=["after_apply"])
    rotator = AclPasswordRotator()
    new = rotator.mint(make_ctx(acl_user, options))
    spec = {
        "options": options.model_dump(),
        "current": acl_user,
        "new": new,
        "rotation_id": "rot_crash",
    }
    env = {**os.environ, "ACL_TEST_SPEC": json.dumps(spec)}
    code = (
        "from tests.integration.rotators.test_acl_rotator import apply_in_child; apply_in_child()"
    )
    child = ChildProcess("apply", [sys.executable, "-c", code], tmp_path / "child.log", env=env)
    child.cwd = Path(__file__).resolve().parents[3]
    child.start()
    try:
        reached = redis_client.blpop([reached_key("after_apply")], timeout=30)
        assert reached is not None, child.log_tail()
        assert reached[1] == "rot_crash"
        assert child.alive
        os.kill(child.pid, signal.SIGKILL)
        assert child.proc is not None and child.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
    # The target already has the new value; the resumed rotation applies the same value.
    assert accepts(redis_url, acl_user["username"], new["password"])
    resumed = make_ctx(acl_user, options, rotation_id="rot_crash")
    rotator.apply(resumed, SecretData(new))  # held once only: runs straight through
    rotator.verify(resumed, SecretData(new))
    assert "acl_password_already_applied" in [e for e, _ in resumed.log.events]
    assert redis_client.llen(release_key("after_apply")) == 0
    for secret in (new["password"], acl_user["password"]):
        assert secret not in child.log_tail(200)


def test_fake_dist_info_registers_the_rotator_in_a_child(
    test_plugins_env: dict[str, str], tmp_path: Path
) -> None:
    code = (
        "from orchestrator.plugins import load_rotators, discover; "
        "r = load_rotators(['acl-password', 'random-password']); "
        "print(sorted(r), r['acl-password'].strategy, "
        "[i.name for i in discover() if i.error is None])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=test_plugins_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "['acl-password', 'random-password'] updater" in out
    assert "'acl-password'" in out.rsplit("updater", 1)[1]


class AclTarget:
    """Conformance-kit target: a fresh ACL user on the test Redis per scenario."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.client = client
        self.url = url
        self.users: list[str] = []

    def setup(self) -> Scenario:
        user = f"conf_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(18)
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
        return accepts(self.url, str(data["username"]), str(data["password"]))


def test_acl_password_passes_the_conformance_kit(redis_url: str, redis_client: redis.Redis) -> None:
    target = AclTarget(redis_client, redis_url)
    try:
        assert Conformance(AclPasswordRotator, target).run()
    finally:
        for user in target.users:
            redis_client.execute_command("ACL", "DELUSER", user)
