"""The ScaiVault emulator over real HTTP: secrets, access, faults, webhooks, rotation, state."""

from __future__ import annotations

import pytest

from tests.fixtures.emulator import Emulator

pytestmark = pytest.mark.integration

PATH = "integrations/salesforce/oauth"


def test_put_then_get_returns_the_spec_shape(emulator: Emulator) -> None:
    first = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"k": "v1"}})
    second = emulator.client.put(
        f"/v1/secrets/{PATH}", json={"data": {"k": "v2"}, "metadata": {"m": 1}}
    )
    assert (first.status_code, first.json()["version"]) == (201, 1)
    assert (second.status_code, second.json()["version"]) == (200, 2)
    assert set(second.json()) == {"path", "version", "created_at"}
    got = emulator.get_secret(PATH)
    assert set(got) == {
        "path",
        "version",
        "data",
        "secret_type",
        "metadata",
        "created_at",
        "created_by",
    }
    assert (got["version"], got["data"], got["metadata"]) == (2, {"k": "v2"}, {"m": 1})
    assert emulator.get_secret(PATH, version=1)["data"] == {"k": "v1"}
