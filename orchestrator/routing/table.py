"""The routing table: the validated rules in file order, where they came from, and lookup."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.routing.matching import literal_prefix
from orchestrator.routing.rule import Rule
from orchestrator.routing.validate import Validator
from rotators.contract import Rotator


@dataclass(frozen=True)
class RoutingOrigin:
    """Which routing file a table was read from: its path, the sha256 of its bytes, and when."""

    path: str
    sha256: str
    loaded_at: datetime

    @classmethod
    def of(cls, path: Path | str, data: bytes) -> RoutingOrigin:
        """The origin of ``data``, read from ``path`` just now."""
        return cls(str(path), hashlib.sha256(data).hexdigest(), datetime.now(UTC))

    @property
    def short(self) -> str:
        """The first 12 hex digits of the sha256, for messages."""
        return self.sha256[:12]

    def describe(self) -> str:
        """``rotation.toml (sha256 1a2b3c4d5e6f, loaded 2026-01-02T03:04:05+00:00)``."""
        loaded = self.loaded_at.isoformat(timespec="seconds")
        return f"{self.path} (sha256 {self.short}, loaded {loaded})"


class RoutingTable:
    """The validated rules, in file order, and the rotator instances they refer to.

    ``origin`` says which file (and which content of it) the rules came from, when they came
    from a file. A worker's table is replaced in place when its file changes
    (:meth:`adopt`), so everything holding the table routes with the new rules at once.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        rotators: Mapping[str, Rotator],
        origin: RoutingOrigin | None = None,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.rotators: dict[str, Rotator] = dict(rotators)
        self.origin = origin

    def adopt(self, other: RoutingTable) -> None:
        """Take ``other``'s rules, rotators and origin (a reload). The rules are swapped in one
        assignment; rotators only ever gain names here, so a rule read just before the swap
        still finds its rotator."""
        self.rotators = {**self.rotators, **other.rotators}
        self.rules = other.rules
        self.origin = other.origin

    @classmethod
    def load(
        cls, path: Path, rotators: Mapping[str, Rotator] | None = None, *, plugins: bool = True
    ) -> RoutingTable:
        """Read and validate ``path``; ``rotators`` None loads the plugins the file names.

        ``plugins=False`` reads which rule covers which path (globs, rotator names, grace
        periods) without importing any plugin and without validating options: what on-call's
        commands need, on a machine that may not have the plugins installed."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the routing file ({exc.strerror}); create it or point "
                "ROTATOR_CONFIG at it"
            ) from None
        return cls.from_bytes(path, data, rotators=rotators, plugins=plugins)

    @classmethod
    def from_bytes(
        cls,
        path: Path,
        data: bytes,
        rotators: Mapping[str, Rotator] | None = None,
        *,
        plugins: bool = True,
    ) -> RoutingTable:
        """Validate ``data``, the content of the routing file at ``path``, as :meth:`load`."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: the routing file is not UTF-8 text") from None
        table = cls.parse(text, source=str(path), rotators=rotators, plugins=plugins)
        table.origin = RoutingOrigin.of(path, data)
        return table

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        source: str = "<routing>",
        rotators: Mapping[str, Rotator] | None = None,
        plugins: bool = True,
    ) -> RoutingTable:
        """Validate routing TOML ``text``; ``source`` names it in problem lines."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls(*Validator(source, rotators, plugins).rules(document))

    @classmethod
    def check(cls, path: Path) -> tuple[RoutingTable, list[str]]:
        """The rules of ``path`` that are valid, and the problems of the rest (``check-config``
        goes on checking the good rules where :meth:`load` refuses the whole file)."""
        try:
            text = path.read_text(encoding="utf-8")
            document = tomllib.loads(text)
        except OSError as exc:
            problem = f"{path}: cannot read the routing file ({exc.strerror})"
            return cls([], {}), [problem + "; create it or point ROTATOR_CONFIG at it"]
        except tomllib.TOMLDecodeError as exc:
            return cls([], {}), [f"{path}: not valid TOML: {exc}"]
        validator = Validator(str(path), None)
        table = cls(*validator.partial(document))
        return table, validator.problems

    def match(self, path: str) -> Rule | None:
        """The first rule whose glob matches ``path``, or None."""
        return next((rule for rule in self.rules if rule.matches(path)), None)

    def number(self, rule: Rule) -> int:
        """``rule``'s number in the file (1 for the first), as problem lines name it."""
        return rule.number or self.rules.index(rule) + 1

    def rotator_for(self, rule: Rule) -> Rotator:
        """The rotator instance ``rule`` names."""
        return self.rotators[rule.rotator]

    def prefixes(self) -> list[str]:
        """The literal leading segments of the rules, for listing candidate secret paths.

        A prefix under another one is left out (``""`` covers everything), so listing each
        returned prefix visits every path a rule can match exactly once.
        """
        out: list[str] = []
        for prefix in sorted({literal_prefix(rule.match) for rule in self.rules}, key=len):
            if not any(q == "" or prefix == q or prefix.startswith(q + "/") for q in out):
                out.append(prefix)
        return out


#: How a skip for lack of a rule starts (the CLI recognises it by this).
NO_RULE = "no rule in the routing file matches this path"


def unrouted_reason(table: RoutingTable, path: str) -> str:
    """Why ``path`` was not rotated when ``table`` has no rule for it, naming the file this
    table came from and, when the file on disk now has a rule for it that the table lacks,
    that rule and why the table does not have it (the file is invalid, or changed a moment
    ago), so nobody mistakes a stale table for a missing rule."""
    origin = table.origin
    if origin is None:
        return NO_RULE
    reason = f"{NO_RULE} (this worker's table: {origin.describe()})"
    source = Path(origin.path)
    try:
        data = source.read_bytes()
        on_disk = RoutingTable.from_bytes(source, data, plugins=False)
    except (ConfigError, OSError):
        return reason
    rule = on_disk.match(path)
    if rule is None or on_disk.origin is None or on_disk.origin.sha256 == origin.sha256:
        return reason
    where = f"the file on disk now (sha256 {on_disk.origin.short}) has rule {on_disk.number(rule)}"
    reason += f"; {where} (match {rule.match!r}) for it, which this worker has not loaded: "
    try:
        RoutingTable.from_bytes(source, data)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        return reason + (
            f"that file is invalid ({len(exc.problems)} problem(s), first: {first}), so the "
            "worker keeps its table; fix it (check-config lists every problem)"
        )
    return reason + "it changed a moment ago; the worker picks it up before its next task"
