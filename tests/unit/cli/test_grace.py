"""On-call's grace actions run no rotator code; a worker's rollback reports the new credential."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.cli.session import OnCall
from orchestrator.engine import rollback
from orchestrator.local.routing_file import routing_toml
from orchestrator.settings import Settings
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData


def test_on_calls_routing_imports_no_plugin(tmp_path: Path) -> None:
    """The CLI needs to know which rule covers a path, not the plugins: a rotator that is not
    installed on on-call's machine still routes."""
    routing = tmp_path / "rotation.toml"
    text = routing_toml(
        [{"match": "apps/*", "rotator": "not-installed-here", "options": {"host": "db"}}]
    )
    routing.write_text(text)
    oc = OnCall(Settings.load(ROTATOR_CONFIG=str(routing)))
    rule = oc.routing.match("apps/a")
    assert rule is not None and rule.rotator == "not-installed-here"
    assert oc.routing.rotators == {}, "no rotator was imported"


class _Issuer(Rotator):
    name = "issuer-under-test"
    strategy = "issuer"
    can_discard = True

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
    outcome, warning = rollback._discard_new(rotator, ctx, NEW)
    if warned is None:
        assert warning is None and "revoked the new credential" in outcome
    else:
        assert warning is not None and warned in warning and "still valid" in warning
        assert "sentinel-new-value" not in warning
