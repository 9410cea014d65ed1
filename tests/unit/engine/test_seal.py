"""Sealing minted values: round trip, key rotation, tampering and foreign blobs refused."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from orchestrator.engine.seal import Sealer
from orchestrator.errors import ConfigError, SealError
from orchestrator.settings import Settings, env_names
from rotators import SecretData

SENTINEL = "SENTINEL-sealed-password-7731"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


def test_round_trip_hides_the_value() -> None:
    sealer = Sealer([Fernet.generate_key()])
    token = sealer.seal({"username": "app", "password": SENTINEL})
    assert SENTINEL not in token and "app" not in token
    assert token.isascii()
    opened = sealer.unseal(token)
    assert isinstance(opened, SecretData)
    assert opened == {"username": "app", "password": SENTINEL}
    assert SENTINEL not in repr(opened)


def test_first_key_seals_every_key_unseals() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token_old = Sealer([old]).seal({"password": SENTINEL})
    rotated = Sealer([new, old])
    assert rotated.unseal(token_old)["password"] == SENTINEL
    token_new = rotated.seal({"password": SENTINEL})
    assert Sealer([new]).unseal(token_new)["password"] == SENTINEL
    with pytest.raises(SealError):
        Sealer([old]).unseal(token_new)


def test_unknown_key_and_tampering_raise_a_clear_error() -> None:
    token = Sealer([Fernet.generate_key()]).seal({"password": SENTINEL})
    with pytest.raises(SealError, match="cannot be opened with any ROTATOR_SEAL_KEY"):
        Sealer([Fernet.generate_key()]).unseal(token)
    sealer = Sealer([Fernet.generate_key()])
    token = sealer.seal({"password": SENTINEL})
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SealError):
        sealer.unseal(tampered)
    with pytest.raises(SealError):
        sealer.unseal("not a token \u00e9")


def test_context_binds_a_blob_to_its_rotation() -> None:
    sealer = Sealer([Fernet.generate_key()])
    token = sealer.seal({"password": SENTINEL}, context="rot_a")
    assert sealer.unseal(token, context="rot_a")["password"] == SENTINEL
    with pytest.raises(SealError, match="another rotation"):
        sealer.unseal(token, context="rot_b")
    with pytest.raises(SealError, match="another rotation"):
        sealer.unseal(token)


def test_bad_or_missing_keys() -> None:
    with pytest.raises(SealError, match="no seal key"):
        Sealer([])
    with pytest.raises(SealError, match="not a Fernet key"):
        Sealer([b"short"])
    assert "REDACTED" in repr(Sealer([Fernet.generate_key()]))


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="ROTATOR_SEAL_KEY is not set"):
        Sealer.from_settings(Settings.load())
    key = Fernet.generate_key()
    monkeypatch.setenv("ROTATOR_SEAL_KEY", key.decode())
    token = Sealer.from_settings(Settings.load()).seal({"password": SENTINEL})
    assert Sealer([key]).unseal(token)["password"] == SENTINEL


def test_error_texts_carry_no_secret() -> None:
    token = Sealer([Fernet.generate_key()]).seal({"password": SENTINEL})
    with pytest.raises(SealError) as info:
        Sealer([Fernet.generate_key()]).unseal(token)
    assert SENTINEL not in str(info.value) and token not in str(info.value)
