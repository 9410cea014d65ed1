"""Rotator plugins: found through the ``scaivault.rotators`` entry-point group, validated on load.

Every installed distribution may declare rotators::

    [project.entry-points."scaivault.rotators"]
    acme-token = "acme_rotator:AcmeTokenRotator"

Loading checks each plugin against the contract (a :class:`~rotators.Rotator` subclass whose
``name`` is its entry-point name, a known ``strategy``, a pydantic ``Options`` model, ``mint``
implemented and ``apply`` too for updaters) and reports *every* problem of *every* requested
plugin in one :class:`PluginError`, each line naming the plugin. Tests pass their own
``entry_points`` (real :class:`importlib.metadata.EntryPoint` objects pointing at test classes)
instead of installing packages.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from orchestrator.errors import ConfigError
from orchestrator.log import get_logger
from rotators.contract import STRATEGIES, Rotator

log = get_logger(__name__)

#: The entry-point group rotator plugins register in
#: (docs/writing-rotators.md#registering-the-plugin).
GROUP = "scaivault.rotators"


class EntryPointLike(Protocol):
    """The part of :class:`importlib.metadata.EntryPoint` the loader uses."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


class PluginError(ConfigError):
    """One or more rotator plugins are missing or break the contract.

    ``problems`` has one line per problem, each starting with the plugin's name;
    ``plugins`` names the offending plugins.
    """

    def __init__(self, problems: Mapping[str, list[str]]) -> None:
        lines = [f"rotator {name!r}: {text}" for name, texts in problems.items() for text in texts]
        super().__init__("invalid rotator plugins: " + "; ".join(lines), lines)
        self.plugins = sorted(problems)


@dataclass(frozen=True)
class PluginInfo:
    """What ``scaivault-rotator rotators`` shows about one installed plugin."""

    name: str
    target: str
    strategy: str | None = None
    options_schema: dict[str, Any] = field(default_factory=dict)
    tells_usage: bool = False
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadResult:
    """Plugins that loaded, and the problems of those that did not (by plugin name)."""

    rotators: dict[str, Rotator]
    problems: dict[str, list[str]]


def installed(entry_points: Iterable[EntryPointLike] | None = None) -> dict[str, EntryPointLike]:
    """The group's entry points by name (``entry_points`` replaces the installed ones)."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=GROUP)
    found: dict[str, EntryPointLike] = {}
    for entry in entry_points:
        found.setdefault(entry.name, entry)
    return found


def try_load(
    names: Iterable[str] | None = None,
    *,
    entry_points: Iterable[EntryPointLike] | None = None,
) -> LoadResult:
    """Load and validate the named plugins (all when ``names`` is None) without raising."""
    available = installed(entry_points)
    wanted = sorted(available) if names is None else sorted(set(names))
    rotators: dict[str, Rotator] = {}
    problems: dict[str, list[str]] = {}
    for name in wanted:
        entry = available.get(name)
        if entry is None:
            problems[name] = [_not_installed(available)]
            continue
        rotator, errors = _load_one(entry)
        if rotator is None:
            problems[name] = errors
            continue
        rotators[name] = rotator
        for warning in check_habits(type(rotator)):
            log.warning("plugin_warning", rotator=name, warning=warning)
    return LoadResult(rotators, problems)


def load_rotators(
    names: Iterable[str] | None = None,
    *,
    entry_points: Iterable[EntryPointLike] | None = None,
) -> dict[str, Rotator]:
    """Return rotator instances by name; raise :class:`PluginError` listing every problem.

    ``names`` None loads every installed plugin.
    """
    result = try_load(names, entry_points=entry_points)
    if result.problems:
        raise PluginError(result.problems)
    return result.rotators


def discover(*, entry_points: Iterable[EntryPointLike] | None = None) -> list[PluginInfo]:
    """Every installed plugin with its strategy and options schema; a broken one has ``error``."""
    infos = []
    for name, entry in sorted(installed(entry_points).items()):
        rotator, errors = _load_one(entry)
        if rotator is None:
            infos.append(PluginInfo(name=name, target=entry.value, error="; ".join(errors)))
            continue
        infos.append(
            PluginInfo(
                name=name,
                target=entry.value,
                strategy=rotator.strategy,
                options_schema=rotator.Options.model_json_schema(),
                tells_usage=rotator.tells_usage,
                warnings=check_habits(type(rotator)),
            )
        )
    return infos


def _not_installed(available: Mapping[str, EntryPointLike]) -> str:
    known = ", ".join(sorted(available)) or "none"
    return (
        f"no such rotator is installed (installed: {known}); install the package that "
        f"declares it in the {GROUP!r} entry-point group, or fix the name"
    )


def _load_one(entry: EntryPointLike) -> tuple[Rotator | None, list[str]]:
    try:
        obj = entry.load()
    except Exception as exc:
        return None, [f"cannot import {entry.value!r}: {type(exc).__name__}: {exc}"]
    problems = check_class(entry.name, obj)
    if problems:
        return None, [f"{entry.value}: {text}" for text in problems]
    try:
        return obj(), []
    except Exception as exc:
        return None, [f"{entry.value}: cannot instantiate: {type(exc).__name__}: {exc}"]


def check_habits(obj: type[Rotator]) -> list[str]:
    """What a loadable rotator probably got wrong: a default ``verify`` proves nothing, and an
    issuer whose ``discard`` is overridden without ``can_discard`` is never asked to revoke."""
    warnings = []
    if obj.verify is Rotator.verify:
        warnings.append(
            "keeps the default verify(), which proves nothing: the engine stores and, after "
            "grace, revokes the old credential without knowing the new one works"
        )
    if obj.discard is not Rotator.discard and not obj.can_discard:
        warnings.append("overrides discard() but leaves can_discard False: it is never called")
    return warnings


def check_class(name: str, obj: Any) -> list[str]:
    """Every way ``obj`` breaks the rotator contract for entry-point name ``name``."""
    if not (isinstance(obj, type) and issubclass(obj, Rotator)):
        return ["is not a subclass of rotators.Rotator"]
    problems = []
    declared = getattr(obj, "name", None)
    if declared != name:
        problems.append(f"class attribute name is {declared!r}; it must equal {name!r}")
    strategy = getattr(obj, "strategy", None)
    if strategy not in STRATEGIES:
        problems.append(f"strategy is {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        problems.append("Options must be a pydantic BaseModel subclass (or leave the default)")
    if obj.mint is Rotator.mint:
        problems.append("does not implement mint()")
    if strategy == "updater" and obj.apply is Rotator.apply:
        problems.append("is an updater but does not implement apply()")
    problems.extend(_check_tunables(obj))
    return problems


def _check_tunables(obj: type[Rotator]) -> list[str]:
    problems = []
    timeout = getattr(obj, "verify_timeout", None)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        problems.append(f"verify_timeout is {timeout!r}; expected seconds >= 0")
    attempts = getattr(obj, "max_mint_attempts", None)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        problems.append(f"max_mint_attempts is {attempts!r}; expected an integer >= 1")
    return problems
