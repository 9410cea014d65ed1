"""What the CLI's grace actions hand to rotators, and how rollback reports the new credential."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.cli import grace
from orchestrator.local.routing_file import routing_toml
from orchestrator.routing import RoutingTable
from orchestrator.state.runs import RunRecord
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData


class _Vault:
    """A full client: reads and writes."""

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        return SecretVersion(path, version or 2, SecretData({"token": "x"}))

    def write(self, *args: Any, **kwargs: Any) -> int:
        raise AssertionError("a rotator must never write to ScaiVault")


def _oncall() -> Any:
    text = routing_toml([{"match": "apps/*", "rotator": "random-password"}])
    return SimpleNamespace(
        routing=RoutingTable.parse(text), vault=_Vault(), settings=SimpleNamespace()
    )


def test_rotators_get_a_read_only_vault_from_the_cli() -> None:
    record = RunRecord(rotation_id="r1", path="apps/a", state="grace")
    current = SecretVersion("apps/a", 2, SecretData({}))
    _, ctx = grace._context(_oncall(), record, current)
    assert ctx.vault.read("apps/b").version == 2
    assert not hasattr(ctx.vault, "write"), "the CLI must not hand rotators a writing client"


def test_rotators_see_the_runs_notes_read_only_from_the_cli() -> None:
    record = RunRecord(rotation_id="r1", path="apps/a", state="grace", notes={"staged_id": "x"})
    current = SecretVersion("apps/a", 2, SecretData({}))
    _, ctx = grace._context(_oncall(), record, current)
    assert ctx.notes.get("staged_id") == "x"
    with pytest.raises(PermanentError, match="read-only"):
        ctx.notes.put("staged_id", "y")


class _Issuer(Rotator):
    name = "issuer-under-test"
    strategy = "issuer"

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        if self.error is not None:
            raise self.error


class _CannotRevoke(Rotator):
    name = "no-discard"
    strategy = "issuer"


NEW = SecretVersion("apps/a", 2, SecretData({"token": "sentinel-new-value"}))


@pytest.mark.parametrize(
    ("rotator", "warned"),
    [
        (_Issuer(None), None),
        (_Issuer(PermanentError("promoted; cannot un-rotate")), "cannot un-rotate"),
        (_Issuer(ValueError("sentinel-new-value")), "discard failed (ValueError)"),
        (_CannotRevoke(), "cannot revoke it"),
    ],
)
def test_rollback_says_whether_the_new_credential_was_revoked(
    rotator: Rotator, warned: str | None
) -> None:
    ctx: Any = SimpleNamespace()
    outcome, warning = grace._discard_new(rotator, ctx, NEW)
    if warned is None:
        assert warning is None and "revoked the new credential" in outcome
    else:
        assert warning is not None and warned in warning and "still valid" in warning
        assert "sentinel-new-value" not in warning
