"""The routing file: which rotator, with which options and grace period, rotates which path.

TOML at ``ROTATOR_CONFIG`` (docs/operating.md#routing-file)::

    [[rules]]
    match = "integrations/salesforce/*"   # * = one path segment, ** = any number of segments
    rotator = "salesforce-oauth"
    grace_period = "48h"                  # optional: used when the event carries none
    [rules.options]                       # validated against the rotator's Options schema
    my_domain_url = "https://acme.my.salesforce.com"

A rule whose rotator can tell who still uses a credential (``Rotator.in_use``) also says how
finalize waits for the old credential's consumers: ``wait_until_unused`` (default on for such
rotators), ``finalize_wait_max`` (default ``24h``), ``when_still_used`` after that
(``needs_attention``, the default, or ``finalize``) and ``finalize_recheck`` (the first
re-check interval, default ``1m``, doubling up to 15 minutes).

Every rule rotates against a *target* with a concurrency budget: ``target`` names it (rules
naming the same target share one budget; default: what the rotator calls the system its
options point at, :meth:`Rotator.target`, else the rule itself) and ``max_concurrent`` is the
budget (default: :attr:`Rotator.max_concurrent`; none means unlimited).

The first matching rule wins. Loading validates every rule and raises one
:class:`~orchestrator.errors.ConfigError` whose ``problems`` list *every* problem, each line
naming the file, the rule number, the field and what to do. Rotator choice and options come
only from this file, never from an event or secret metadata (docs/architecture.md, invariant I6).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator import plugins, tracing
from orchestrator.duration import parse_duration
from orchestrator.errors import ConfigError
from rotators.contract import Rotator

#: Every key a rule may have (then: how finalize waits for the old credential; the target
#: and its concurrency budget).
RULE_KEYS = (
    frozenset({"match", "rotator", "grace_period", "options"})
    | frozenset({"wait_until_unused", "finalize_wait_max", "when_still_used", "finalize_recheck"})
    | frozenset({"target", "max_concurrent"})
)
#: The largest ``max_concurrent`` a rule may set.
MAX_CONCURRENT_LIMIT = 10_000
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
#: What finalize does once ``finalize_wait_max`` has passed and the old credential is in use.
WHEN_STILL_USED = ("needs_attention", "finalize")
_BAD_GLOB_CHARS = re.compile(r"[?\[\]{}\s]")


@dataclass(frozen=True)
class UnusedWait:
    """How finalize waits for the old credential's consumers to move off it (one rule's).

    ``enabled`` None means "when the rotator can tell" (:attr:`Rotator.tells_usage`). Finalize
    is re-checked after ``recheck``, doubling up to :data:`RECHECK_CAP` (or ``recheck`` when
    larger), until the old credential is unused or ``max_wait`` has passed; then ``then`` says
    whether it finalizes anyway or holds the run as ``needs_attention``.
    """

    enabled: bool | None = None
    max_wait: timedelta = timedelta(hours=24)
    then: str = "needs_attention"
    recheck: timedelta = timedelta(minutes=1)

    def applies_to(self, rotator: Rotator) -> bool:
        """Whether finalize asks ``rotator`` who still uses the old credential."""
        return rotator.tells_usage and self.enabled is not False


@dataclass(frozen=True)
class Budget:
    """The target a rule rotates against and how many rotations may work on it at once
    (``limit`` None: unlimited). Rules naming the same ``target`` share its budget."""

    target: str
    limit: int | None = None

    def capped(self, cap: int | None) -> Budget:
        """This budget lowered to ``cap`` (a batch's own ``--concurrency``; None: unchanged).
        A cap never raises the budget; the slots stay the target's, shared with every run."""
        if cap is None or (self.limit is not None and self.limit <= cap):
            return self
        return Budget(self.target, cap)

    def describe(self) -> str:
        """``db.internal:5432 (at most 16 at once)`` or ``... (no limit)``."""
        limit = "no limit" if self.limit is None else f"at most {self.limit} at once"
        return f"{self.target} ({limit})"


def rule_target(match: str) -> str:
    """The target name of a rule whose rotator names none: the rule itself."""
    return f"rule:{match}"


#: The longest re-check interval of a waiting finalize (unless ``finalize_recheck`` is longer).
RECHECK_CAP = timedelta(minutes=15)


@dataclass(frozen=True)
class Rule:
    """One validated rule: a path glob, the rotator's name, its grace period and options, and
    how its finalize waits for the old credential to be unused."""

    match: str
    rotator: str
    grace_period: timedelta | None
    options: BaseModel
    unused: UnusedWait = field(default_factory=UnusedWait)
    #: The rule's position in its file, from 1 (0: not read from a file).
    number: int = field(default=0, compare=False)
    #: Its target and concurrency budget (None: the rule is its own target, no limit).
    budget: Budget | None = None
    _segments: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._segments:
            object.__setattr__(self, "_segments", tuple(self.match.split("/")))

    @property
    def target(self) -> Budget:
        """The rule's target and budget (the rule itself, unlimited, when none was set)."""
        return self.budget or Budget(rule_target(self.match))

    def matches(self, path: str) -> bool:
        """True when ``path`` (segments separated by ``/``) matches this rule's glob."""
        return _match(self._segments, tuple(path.strip("/").split("/")))


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
        return _Validator(source, rotators, plugins).table(document)

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
        validator = _Validator(str(path), None)
        table = validator.partial(document)
        return table, validator.problems

    def match(self, path: str) -> Rule | None:
        """The first rule whose glob matches ``path``, or None."""
        return next((rule for rule in self.rules if rule.matches(path)), None)

    def number(self, rule: Rule) -> int:
        """``rule``'s number in the file (1 for the first), as problem lines name it."""
        return rule.number or self.rules.index(rule) + 1

    def rotator_for(self, rule: Rule) -> Rotator:
        """The rotator instance ``rule`` names (its calls traced when tracing is on)."""
        return tracing.traced(self.rotators[rule.rotator])

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


def check_glob(glob: str) -> str | None:
    """What is wrong with a ``match`` glob, or None when it is usable."""
    if not glob.strip():
        return "is empty; write a path glob such as 'integrations/salesforce/*'"
    if glob.startswith("/") or glob.endswith("/") or "//" in glob:
        return "has an empty segment or a leading/trailing '/'; write 'a/b/*' style paths"
    if _BAD_GLOB_CHARS.search(glob):
        return "contains whitespace or ?[]{}; only * (one segment) and ** (any) are wildcards"
    for segment in glob.split("/"):
        if "**" in segment and segment != "**":
            return f"segment {segment!r}: ** must be a whole segment, e.g. 'a/**/b'"
        if segment in {".", ".."}:
            return "must not contain '.' or '..' segments"
    return None


def literal_prefix(glob: str) -> str:
    """The part of a routing glob before its first wildcard segment."""
    literal = []
    for segment in glob.split("/"):
        if "*" in segment:
            break
        literal.append(segment)
    return "/".join(literal)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the choice nearest ``word`` (a typo), or ``''``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    """True when ``segments`` match the glob ``pattern``.

    Walks the path once, keeping the set of glob positions reachable so far (a ``**`` both
    stays put on a segment and may be skipped). Each segment is compared at most once with
    each glob segment, so several ``**`` on a long path cost at most
    ``len(pattern) * len(segments)`` comparisons, where trying every split of every ``**``
    grows exponentially with their number.
    """
    end = len(pattern)
    positions = _past_globstars(pattern, {0})
    for segment in segments:
        moved = {
            p if pattern[p] == "**" else p + 1
            for p in positions
            if p < end and _segment_matches(pattern[p], segment)
        }
        if not moved:
            return False
        positions = _past_globstars(pattern, moved)
    return end in positions


def _past_globstars(pattern: tuple[str, ...], positions: set[int]) -> set[int]:
    """``positions`` plus every position reached by letting ``**`` match no segment."""
    out: set[int] = set()
    for p in positions:
        while p not in out:  # a position already in ``out`` brought its own skips along
            out.add(p)
            if p == len(pattern) or pattern[p] != "**":
                break
            p += 1
    return out


def _segment_matches(pattern: str, segment: str) -> bool:
    """One glob segment against one path segment; ``**`` (like ``*``) matches any one."""
    if "*" not in pattern:
        return pattern == segment
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, segment) is not None


class _Unvalidated(BaseModel):
    """A rule's options as the file has them, not checked (a table read without plugins)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class _Validator:
    """Collects every problem of one routing document, then builds the table or raises."""

    def __init__(
        self, source: str, rotators: Mapping[str, Rotator] | None, plugins: bool = True
    ) -> None:
        self.source = source
        self.given = rotators
        self.plugins = plugins
        self.problems: list[str] = []
        self.load_problems: dict[str, list[str]] = {}

    def table(self, document: dict[str, Any]) -> RoutingTable:
        table = self.partial(document)
        if self.problems:
            count = len(self.problems)
            summary = f"{self.source}: {count} problem(s) in the routing file: "
            raise ConfigError(summary + "; ".join(self.problems), self.problems)
        return table

    def partial(self, document: dict[str, Any]) -> RoutingTable:
        """The rules that validated (the problems of the others stay in ``problems``)."""
        raw_rules = self._raw_rules(document)
        available = self._rotators(raw_rules)
        rules = []
        seen: dict[str, int] = {}
        for number, raw in enumerate(raw_rules, start=1):
            rule = self._rule(number, raw, available)
            if rule is None:
                continue
            if rule.match in seen:
                self._problem(
                    number,
                    "match",
                    f"repeats rule {seen[rule.match]}, so it never matches; remove one of them",
                )
            seen.setdefault(rule.match, number)
            rules.append(rule)
        used = {rule.rotator for rule in rules}
        return RoutingTable(rules, {n: r for n, r in available.items() if n in used})

    def _raw_rules(self, document: dict[str, Any]) -> list[dict[str, Any]]:
        for key in sorted(set(document) - {"rules"}):
            self.problems.append(
                f"{self.source}: unknown top-level key {key!r}; only [[rules]] tables belong here"
            )
        raw = document.get("rules")
        if raw is None:
            self.problems.append(f"{self.source}: no [[rules]]; add at least one rule")
            return []
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            self.problems.append(f"{self.source}: 'rules' must be an array of tables ([[rules]])")
            return []
        return raw

    def _rotators(self, raw_rules: list[dict[str, Any]]) -> Mapping[str, Rotator]:
        if self.given is not None or not self.plugins:
            return self.given or {}
        names = {r["rotator"] for r in raw_rules if isinstance(r.get("rotator"), str)}
        result = plugins.try_load(names)
        self.load_problems = result.problems
        return result.rotators

    def _rule(
        self, number: int, raw: dict[str, Any], available: Mapping[str, Rotator]
    ) -> Rule | None:
        before = len(self.problems)
        for key in sorted(set(raw) - RULE_KEYS):
            known = ", ".join(sorted(RULE_KEYS))
            self._problem(
                number, key, f"unknown key{_did_you_mean(key, RULE_KEYS)}; a rule has {known}"
            )
        match = self._match(number, raw.get("match"))
        grace = self._grace(number, raw.get("grace_period"))
        unused = self._unused(number, raw)
        target, limit = self._budget(number, raw)
        if not self.plugins:  # which rule covers which path, nothing more
            name, options = raw.get("rotator"), raw.get("options", {})
            if not isinstance(name, str) or not isinstance(options, dict):
                self._problem(number, "rotator", "missing or not a string (or bad options)")
            if len(self.problems) > before or match is None:
                return None
            options_model = _Unvalidated.model_validate(options)
            budget = Budget(target or rule_target(match), limit)
            return Rule(match, str(name), grace, options_model, unused, number, budget)
        rotator = self._rotator(number, raw.get("rotator"), available)
        options = self._options(number, raw.get("options", {}), rotator)
        if rotator is not None and unused.enabled and not rotator.tells_usage:
            self._problem(
                number,
                "wait_until_unused",
                f"rotator {rotator.name!r} cannot tell whether a credential is still in use "
                "(it has no in_use step); remove the key, or use a rotator that can",
            )
        if len(self.problems) > before or match is None or rotator is None or options is None:
            return None
        budget = Budget(
            target or rotator.target(options) or rule_target(match),
            limit if limit is not None else rotator.max_concurrent,
        )
        return Rule(match, raw["rotator"], grace, options, unused, number, budget)

    def _match(self, number: int, value: Any) -> str | None:
        if not isinstance(value, str):
            self._problem(number, "match", 'missing or not a string; e.g. match = "apps/*/db"')
            return None
        error = check_glob(value)
        if error:
            self._problem(number, "match", f"{value!r} {error}")
            return None
        return value

    def _rotator(self, number: int, value: Any, available: Mapping[str, Rotator]) -> Rotator | None:
        if not isinstance(value, str):
            self._problem(number, "rotator", "missing or not a string; name an installed rotator")
            return None
        if value in available:
            return available[value]
        if value in self.load_problems:
            detail = "; ".join(self.load_problems[value])
            guess = _did_you_mean(value, plugins.installed())
            if guess:
                detail = f"{guess.removeprefix('; ')} {detail}"
        else:
            known = ", ".join(sorted(available)) or "none"
            guess = _did_you_mean(value, available)
            detail = f"no such rotator is installed{guess} (available: {known})"
        self._problem(number, "rotator", f"{value!r}: {detail}")
        return None

    def _grace(self, number: int, value: Any) -> timedelta | None:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self._problem(number, "grace_period", str(exc))
            return None

    def _unused(self, number: int, raw: dict[str, Any]) -> UnusedWait:
        """The rule's finalize wait (its problems recorded; defaults where a key is bad)."""
        default = UnusedWait()
        enabled = raw.get("wait_until_unused")
        if enabled is not None and not isinstance(enabled, bool):
            self._problem(number, "wait_until_unused", "must be true or false")
            enabled = None
        then = raw.get("when_still_used", default.then)
        if then not in WHEN_STILL_USED:
            choices = " or ".join(repr(c) for c in WHEN_STILL_USED)
            self._problem(number, "when_still_used", f"{then!r} is not one of {choices}")
            then = default.then
        max_wait = self._duration(number, raw, "finalize_wait_max", default.max_wait)
        recheck = self._duration(number, raw, "finalize_recheck", default.recheck)
        if recheck < timedelta(seconds=1):
            self._problem(number, "finalize_recheck", "must be at least 1s, e.g. '1m'")
            recheck = default.recheck
        return UnusedWait(enabled, max_wait, str(then), recheck)

    def _budget(self, number: int, raw: dict[str, Any]) -> tuple[str | None, int | None]:
        """The rule's ``target`` and ``max_concurrent`` (None where unset or bad)."""
        target = raw.get("target")
        if target is not None and (not isinstance(target, str) or not _TARGET_NAME.match(target)):
            self._problem(
                number,
                "target",
                f"{target!r} is not a target name: 1-200 letters, digits and ._:/@+- "
                'starting with a letter or digit, e.g. target = "orders-db.internal:5432"',
            )
            target = None
        limit = raw.get("max_concurrent")
        ok = isinstance(limit, int) and not isinstance(limit, bool)
        if limit is not None and not (ok and 1 <= limit <= MAX_CONCURRENT_LIMIT):
            self._problem(
                number,
                "max_concurrent",
                f"{limit!r} is not a whole number from 1 to {MAX_CONCURRENT_LIMIT}; "
                "e.g. max_concurrent = 16",
            )
            limit = None
        return target, limit

    def _duration(
        self, number: int, raw: dict[str, Any], key: str, default: timedelta
    ) -> timedelta:
        if key not in raw:
            return default
        try:
            return parse_duration(raw[key])
        except ValueError as exc:
            self._problem(number, key, str(exc))
            return default

    def _options(self, number: int, value: Any, rotator: Rotator | None) -> BaseModel | None:
        if not isinstance(value, dict):
            self._problem(number, "options", "must be a table ([rules.options])")
            return None
        if rotator is None:
            return None
        try:
            return rotator.Options.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors(include_input=False, include_url=False):
                where = ".".join(str(part) for part in error.get("loc", ()))
                name = f"options.{where}" if where else "options"
                message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
                if error.get("type") == "extra_forbidden":
                    message += _did_you_mean(where, rotator.Options.model_fields)
                self._problem(number, name, f"{message} (rotator {rotator.name!r})")
            return None

    def _problem(self, number: int, field_name: str, text: str) -> None:
        self.problems.append(f"{self.source}: rule {number}: {field_name}: {text}")
