"""The routing table: typed rules, first match wins, loading a file, listing prefixes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.routing import RoutingTable
from rotators.random_password import RandomPasswordOptions, RandomPasswordRotator

ROTATORS = {"random-password": RandomPasswordRotator()}

GOOD = """
[[rules]]
match = "integrations/salesforce/*"
rotator = "random-password"
grace_period = "48h"
[rules.options]
length = 40
field = "client_secret"

[[rules]]
match = "apps/**/db"
rotator = "random-password"

[[rules]]
match = "**"
rotator = "random-password"
grace_period = "1h30m"
"""


def table(text: str = GOOD) -> RoutingTable:
    return RoutingTable.parse(text, source="rotation.toml", rotators=ROTATORS)


def test_rules_are_validated_into_typed_values() -> None:
    rules = table().rules
    assert len(rules) == 3
    first = rules[0]
    assert first.rotator == "random-password"
    assert first.grace_period == timedelta(hours=48)
    assert isinstance(first.options, RandomPasswordOptions)
    assert first.options.length == 40 and first.options.field == "client_secret"
    assert rules[1].grace_period is None
    assert rules[1].options == RandomPasswordOptions()
    assert rules[2].grace_period == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("integrations/salesforce/oauth", "integrations/salesforce/*"),
        ("integrations/salesforce/oauth/extra", "**"),
        ("integrations/salesforce", "**"),
        ("apps/db", "apps/**/db"),
        ("apps/a/b/c/db", "apps/**/db"),
        ("apps/a/b/c/dbx", "**"),
    ],
)
def test_first_match_wins(path: str, expected: str) -> None:
    rule = table().match(path)
    assert rule is not None and rule.match == expected


def test_no_rule_matches() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "random-password"\n'
    assert table(text).match("b/c") is None


def test_load_discovers_only_the_rotators_the_file_names(tmp_path: Path) -> None:
    path = tmp_path / "rotation.toml"
    path.write_text('[[rules]]\nmatch = "a/*"\nrotator = "random-password"\n')
    loaded = RoutingTable.load(path)
    rule = loaded.match("a/b")
    assert rule is not None
    assert isinstance(loaded.rotator_for(rule), RandomPasswordRotator)
    assert set(loaded.rotators) == {"random-password"}


def test_prefixes_for_listing() -> None:
    assert table().prefixes() == [""]
    rules = "".join(
        f'[[rules]]\nmatch = "{glob}"\nrotator = "random-password"\n'
        for glob in ("apps/db-*/pw", "integrations/sf/*", "apps/**", "integrations/sfx/x")
    )
    assert table(rules).prefixes() == ["apps", "integrations/sf", "integrations/sfx/x"]


def test_rules_name_rotators_by_their_routing_key() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "alias"\n'
    routing = RoutingTable.parse(text, rotators={"alias": RandomPasswordRotator()})
    rule = routing.match("a/b")
    assert rule is not None and rule.rotator == "alias"
    assert isinstance(routing.rotator_for(rule), RandomPasswordRotator)
