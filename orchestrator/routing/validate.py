"""Validating a routing document: every problem of every rule collected, each naming its field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.duration import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.routing.matching import check_glob
from orchestrator.routing.rule import (
    MAX_CONCURRENT_LIMIT,
    RULE_KEYS,
    WHEN_STILL_USED,
    Budget,
    Rule,
    UnusedWait,
    rule_target,
)
from rotators.contract import Rotator

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the choice nearest ``word`` (a typo), or ``''``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Unvalidated(BaseModel):
    """A rule's options as the file has them, not checked (a table read without plugins)."""

    model_config = ConfigDict(extra="allow", frozen=True)


#: A document's valid rules in file order, and the rotators they name.
Validated = tuple[list[Rule], dict[str, Rotator]]


class Validator:
    """Collects every problem of one routing document, then gives its rules or raises."""

    def __init__(
        self, source: str, rotators: Mapping[str, Rotator] | None, plugins: bool = True
    ) -> None:
        self.source = source
        self.given = rotators
        self.plugins = plugins
        self.problems: list[str] = []
        self.load_problems: dict[str, list[str]] = {}

    def rules(self, document: dict[str, Any]) -> Validated:
        """Every rule of ``document``, or one :class:`ConfigError` listing every problem."""
        valid = self.partial(document)
        if self.problems:
            count = len(self.problems)
            summary = f"{self.source}: {count} problem(s) in the routing file: "
            raise ConfigError(summary + "; ".join(self.problems), self.problems)
        return valid

    def partial(self, document: dict[str, Any]) -> Validated:
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
        return rules, {n: r for n, r in available.items() if n in used}

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
        # Imported here: a table read without plugins (on-call's) never loads the plugin loader.
        from orchestrator import plugins

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
            from orchestrator import plugins  # as in _rotators, which imported it already

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
