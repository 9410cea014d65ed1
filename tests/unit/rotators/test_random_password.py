"""The built-in random-password rotator: policy, field handling, randomness source."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from rotators import CredentialRejected, RotationContext, SecretData, SecretVersion
from rotators.passwords import generate, policy_problem
from rotators.random_password import RandomPasswordOptions, RandomPasswordRotator


class NullLog:
    def debug(self, event: str, **fields: Any) -> None: ...
    def info(self, event: str, **fields: Any) -> None: ...
    def warning(self, event: str, **fields: Any) -> None: ...
    def error(self, event: str, **fields: Any) -> None: ...


class NoVault:
    def read(self, path: str, version: int | None = None) -> SecretVersion:
        raise AssertionError("random-password never reads ScaiVault")


def ctx(data: dict[str, Any], options: BaseModel | None = None) -> RotationContext:
    current = SecretVersion(path="apps/db", version=3, data=SecretData(data))
    return RotationContext(
        path="apps/db",
        rotation_id="rot_1",
        current=current,
        options=options or RandomPasswordOptions(),
        log=NullLog(),
        vault=NoVault(),
    )


def test_mint_replaces_only_the_field_and_keeps_the_rest() -> None:
    rotator = RandomPasswordRotator()
    current = {"username": "app", "password": "old-password-value", "host": "db"}
    new = rotator.mint(ctx(current))
    assert new["username"] == "app" and new["host"] == "db"
    assert new["password"] != "old-password-value"
    assert len(new["password"]) == 32
    assert current["password"] == "old-password-value"  # the current data is not mutated


def test_mint_adds_a_missing_field() -> None:
    options = RandomPasswordOptions(field="api_key", length=20)
    new = RandomPasswordRotator().mint(ctx({"note": "x"}, options))
    assert set(new) == {"note", "api_key"} and len(new["api_key"]) == 20


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"length": 12, "symbols": False},
        {"length": 1024, "exclude": "lI1O0"},
        {"lowercase": False, "uppercase": False, "symbols": False, "length": 12},
        {"symbols_set": "-_", "digits": False},
    ],
)
def test_every_enabled_class_is_used_and_nothing_else(kwargs: dict[str, Any]) -> None:
    options = RandomPasswordOptions(**kwargs)
    for _ in range(50):
        value = generate(options)
        assert policy_problem(value, options) is None
        assert not set(value) & set(options.exclude)
        for pool in options.classes():
            assert set(value) & set(pool)


def test_disabled_classes_never_appear() -> None:
    options = RandomPasswordOptions(symbols=False, uppercase=False)
    value = "".join(generate(options) for _ in range(20))
    assert not set(value) - set(string.ascii_lowercase + string.digits)


def test_generation_does_not_use_the_random_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("random module used")

    for name in ("choice", "choices", "shuffle", "randint", "randrange", "random", "sample"):
        monkeypatch.setattr(random, name, boom)
    assert len(generate(RandomPasswordOptions())) == 32


def test_values_are_unique() -> None:
    options = RandomPasswordOptions()
    assert len({generate(options) for _ in range(200)}) == 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 11}, "greater than or equal to 12"),
        ({"length": 1025}, "less than or equal to 1024"),
        ({"lowercase": False, "uppercase": False, "digits": False, "symbols": False}, "at least"),
        ({"digits": True, "exclude": string.digits}, "exclude removes every character of digits"),
        ({"symbols_set": "- "}, "whitespace"),
        ({"field": ""}, "at least 1 character"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RandomPasswordOptions(**kwargs)


def test_verify_accepts_a_minted_value() -> None:
    rotator = RandomPasswordRotator()
    context = ctx({"password": "x"})
    rotator.verify(context, SecretData(rotator.mint(context)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing"),
        ({"password": 12345}, "not a string"),
        ({"password": "short"}, "has length 5"),
        ({"password": "a" * 31 + "\u00e9"}, "outside the allowed classes"),
        ({"password": "a" * 32}, "lacks a character"),
    ],
)
def test_verify_rejects_values_outside_the_policy(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialRejected, match=message) as info:
        RandomPasswordRotator().verify(ctx({}), SecretData(data))
    assert info.value.step == "verify"
    if isinstance(data.get("password"), str):
        assert data["password"] not in str(info.value)


def test_the_character_classes_follow_the_options_of_a_copy() -> None:
    options = RandomPasswordOptions()
    assert any(c.isdigit() for c in options.alphabet())
    copy = options.model_copy(update={"digits": False})
    assert not any(c.isdigit() for c in copy.alphabet())
    assert len(copy.classes()) == len(options.classes()) - 1
