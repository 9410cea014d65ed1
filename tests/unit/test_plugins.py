"""Plugin discovery and validation, with fake entry points instead of installed packages."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from orchestrator import plugins
from orchestrator.errors import ConfigError
from orchestrator.plugins import GROUP, PluginError
from rotators import RotationContext, Rotator, SecretData
from rotators.random_password import RandomPasswordRotator


class GoodOptions(BaseModel):
    region: str = "eu"


class Good(Rotator):
    name = "good"
    strategy = "issuer"
    Options: ClassVar[type[BaseModel]] = GoodOptions

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        return {}

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        """Proves nothing here, but says so."""


class Updater(Rotator):
    name = "updater"
    strategy = "updater"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        return {}

    def apply(self, ctx: RotationContext, new: SecretData) -> None:
        pass


class LazyUpdater(Rotator):
    name = "lazy"
    strategy = "updater"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        return {}


class Misnamed(Good):
    name = "other-name"
    strategy = "sometimes"  # type: ignore[assignment]
    Options = dict  # type: ignore[assignment]


class NoMint(Rotator):
    name = "nomint"
    strategy = "vault-only"
    verify_timeout = -1


class Exploding(Good):
    name = "exploding"

    def __init__(self) -> None:
        raise RuntimeError("cannot start")


class NotARotator:
    name = "plain"


def ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{target}", group=GROUP)


FAKES = [
    ep("good", "Good"),
    ep("updater", "Updater"),
    ep("lazy", "LazyUpdater"),
    ep("misnamed", "Misnamed"),
    ep("nomint", "NoMint"),
    ep("exploding", "Exploding"),
    ep("plain", "NotARotator"),
    EntryPoint(name="missing", value="no_such_module_xyz:Thing", group=GROUP),
]


def test_loads_valid_plugins_as_instances() -> None:
    loaded = plugins.load_rotators(["good", "updater"], entry_points=FAKES)
    assert set(loaded) == {"good", "updater"}
    assert isinstance(loaded["good"], Good)
    assert loaded["updater"].strategy == "updater"


def test_every_problem_of_every_plugin_is_reported_at_once() -> None:
    names = ["lazy", "misnamed", "nomint", "exploding", "plain", "missing", "unknown"]
    with pytest.raises(PluginError) as info:
        plugins.load_rotators(names, entry_points=FAKES)
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.plugins == sorted(names)
    text = "\n".join(error.problems)
    assert "rotator 'lazy':" in text and "updater but does not implement apply()" in text
    assert "name is 'other-name'; it must equal 'misnamed'" in text
    assert "strategy is 'sometimes'" in text
    assert "Options must be a pydantic BaseModel" in text
    assert "rotator 'nomint':" in text and "does not implement mint()" in text
    assert "verify_timeout is -1" in text
    assert "cannot instantiate: RuntimeError: cannot start" in text
    assert "rotator 'plain':" in text and "not a subclass of rotators.Rotator" in text
    assert "cannot import 'no_such_module_xyz:Thing': ModuleNotFoundError" in text
    assert "rotator 'unknown': no such rotator is installed (installed: exploding, good" in text


def test_no_names_loads_all_and_fails_on_any_broken_one() -> None:
    assert set(plugins.load_rotators(entry_points=FAKES[:2])) == {"good", "updater"}
    with pytest.raises(PluginError):
        plugins.load_rotators(entry_points=FAKES)


def test_try_load_separates_good_from_broken() -> None:
    result = plugins.try_load(["good", "lazy"], entry_points=FAKES)
    assert set(result.rotators) == {"good"}
    assert set(result.problems) == {"lazy"}


def test_discover_reports_broken_plugins_without_failing() -> None:
    infos = {info.name: info for info in plugins.discover(entry_points=FAKES)}
    assert set(infos) == {e.name for e in FAKES}
    assert infos["good"].error is None
    assert infos["good"].strategy == "issuer"
    assert infos["good"].options_schema["properties"]["region"]["default"] == "eu"
    assert infos["lazy"].error is not None and "apply()" in infos["lazy"].error
    assert infos["missing"].strategy is None


def test_first_of_duplicate_entry_points_wins() -> None:
    dupes = [ep("good", "Good"), EntryPoint(name="good", value="nowhere:X", group=GROUP)]
    assert isinstance(plugins.load_rotators(["good"], entry_points=dupes)["good"], Good)


def test_installed_builtin_random_password_is_discovered() -> None:
    loaded = plugins.load_rotators(["random-password"])
    assert isinstance(loaded["random-password"], RandomPasswordRotator)


class Unverified(Rotator):
    name = "unverified"
    strategy = "issuer"

    def mint(self, ctx: Any) -> dict[str, Any]:
        return {}

    def discard(self, ctx: Any, new: Any) -> None:
        """Revokes, but can_discard was left False: the engine never calls it."""


def test_the_loader_warns_about_a_default_verify_and_a_discard_never_called(
    log_stream: Any,
) -> None:
    [info] = plugins.discover(entry_points=[ep("unverified", "Unverified")])
    assert info.error is None and len(info.warnings) == 2
    assert "default verify()" in info.warnings[0] and "can_discard" in info.warnings[1]
    plugins.load_rotators(["unverified"], entry_points=[ep("unverified", "Unverified")])
    assert log_stream.getvalue().count('"event": "plugin_warning"') == 2
    [good] = plugins.discover(entry_points=[ep("good", "Good")])
    assert good.warnings == []
