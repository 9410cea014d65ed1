"""A rule's finalize wait and target budget: defaults, the keys that set them, their problems."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator import routing
from orchestrator.errors import ConfigError
from orchestrator.routing import RoutingTable
from rotators import RotationContext, SecretData, Usage
from rotators.random_password import RandomPasswordOptions, RandomPasswordRotator

ROTATORS = {"random-password": RandomPasswordRotator()}


class TellsUsage(RandomPasswordRotator):
    """A rotator that can tell who uses a credential (it overrides ``in_use``)."""

    name = "tells-usage"

    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        return Usage(sessions=0)


WAITING_ROTATORS = {**ROTATORS, "tells-usage": TellsUsage()}


def test_finalize_waits_by_default_only_where_the_rotator_can_tell() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "tells-usage"\n'
    text += '[[rules]]\nmatch = "b/*"\nrotator = "random-password"\n'
    waits, plain = RoutingTable.parse(text, rotators=WAITING_ROTATORS).rules
    assert waits.unused == routing.UnusedWait()
    assert waits.unused.max_wait == timedelta(hours=24) and waits.unused.then == "needs_attention"
    assert waits.unused.applies_to(TellsUsage())
    assert not plain.unused.applies_to(RandomPasswordRotator())


def test_the_finalize_wait_keys_are_validated() -> None:
    text = """
[[rules]]
match = "a/*"
rotator = "tells-usage"
wait_until_unused = false
finalize_wait_max = "2h"
when_still_used = "finalize"
finalize_recheck = "30s"
"""
    rule = RoutingTable.parse(text, rotators=WAITING_ROTATORS).rules[0]
    assert rule.unused == routing.UnusedWait(
        enabled=False, max_wait=timedelta(hours=2), then="finalize", recheck=timedelta(seconds=30)
    )
    assert not rule.unused.applies_to(TellsUsage())


def test_every_finalize_wait_problem_is_a_problem_line() -> None:
    text = """
[[rules]]
match = "a/*"
rotator = "random-password"
wait_until_unused = true

[[rules]]
match = "b/*"
rotator = "tells-usage"
wait_until_unused = "yes"
finalize_wait_max = "a day"
when_still_used = "revoke"
finalize_recheck = "0s"
"""
    with pytest.raises(ConfigError) as info:
        RoutingTable.parse(text, source="rotation.toml", rotators=WAITING_ROTATORS)
    assert info.value.problems == [
        "rotation.toml: rule 1: wait_until_unused: rotator 'random-password' cannot tell whether "
        "a credential is still in use (it has no in_use step); remove the key, or use a rotator "
        "that can",
        "rotation.toml: rule 2: wait_until_unused: must be true or false",
        "rotation.toml: rule 2: when_still_used: 'revoke' is not one of 'needs_attention' or "
        "'finalize'",
        "rotation.toml: rule 2: finalize_wait_max: 'a day' is not a duration: use whole numbers "
        "with units d, h, m, s in that order, e.g. 90d, 48h, 30m, 15s or 1h30m",
        "rotation.toml: rule 2: finalize_recheck: must be at least 1s, e.g. '1m'",
    ]


def test_a_table_read_without_plugins_keeps_the_finalize_wait() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "not-installed"\nfinalize_wait_max = "3h"\n'
    rule = RoutingTable.parse(text, plugins=False).rules[0]
    assert rule.unused.max_wait == timedelta(hours=3)


class NamesItsTarget(RandomPasswordRotator):
    """A rotator that names the system behind its options and sets a default budget."""

    name = "names-target"
    max_concurrent = 4

    def target(self, options: RandomPasswordOptions) -> str | None:
        return f"store:{options.field}"


def test_a_rule_names_its_target_and_budget_or_takes_the_rotators() -> None:
    text = """
[[rules]]
match = "a/*"
rotator = "names-target"
target = "orders-db.internal:5432"
max_concurrent = 16

[[rules]]
match = "b/*"
rotator = "names-target"

[[rules]]
match = "c/*"
rotator = "random-password"
"""
    rotators = {**ROTATORS, "names-target": NamesItsTarget()}
    a, b, c = RoutingTable.parse(text, rotators=rotators).rules
    assert a.target == routing.Budget("orders-db.internal:5432", 16)
    assert b.target == routing.Budget("store:password", 4)
    assert c.target == routing.Budget("rule:c/*", None)
    assert c.target.describe() == "rule:c/* (no limit)"
    assert a.target.describe() == "orders-db.internal:5432 (at most 16 at once)"


def test_every_budget_problem_is_a_problem_line() -> None:
    text = """
[[rules]]
match = "a/*"
rotator = "random-password"
target = " spaced out"
max_concurrent = 0

[[rules]]
match = "b/*"
rotator = "random-password"
max_concurrent = true
"""
    with pytest.raises(ConfigError) as info:
        RoutingTable.parse(text, source="rotation.toml", rotators=ROTATORS)
    assert info.value.problems == [
        "rotation.toml: rule 1: target: ' spaced out' is not a target name: 1-200 letters, "
        "digits and ._:/@+- starting with a letter or digit, e.g. target = "
        '"orders-db.internal:5432"',
        "rotation.toml: rule 1: max_concurrent: 0 is not a whole number from 1 to 10000; "
        "e.g. max_concurrent = 16",
        "rotation.toml: rule 2: max_concurrent: True is not a whole number from 1 to 10000; "
        "e.g. max_concurrent = 16",
    ]


def test_a_batch_cap_only_ever_lowers_a_budget() -> None:
    budget = routing.Budget("db:5432", 16)
    assert budget.capped(None) is budget
    assert budget.capped(32) is budget
    assert budget.capped(4) == routing.Budget("db:5432", 4)
    assert routing.Budget("db:5432").capped(4) == routing.Budget("db:5432", 4), (
        "an unlimited target too"
    )
