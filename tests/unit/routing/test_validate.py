"""Validating a routing file: every problem reported at once, naming file, rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.routing import RoutingTable
from rotators.random_password import RandomPasswordRotator

ROTATORS = {"random-password": RandomPasswordRotator()}


def table(text: str) -> RoutingTable:
    return RoutingTable.parse(text, source="rotation.toml", rotators=ROTATORS)


def test_every_problem_is_reported_at_once_with_file_rule_and_field() -> None:
    text = """
colour = "blue"
[[rules]]
match = "a//b"
rotator = "random-password"
grace_period = "two days"
typo_key = 1
[rules.options]
length = 4
colour = "red"

[[rules]]
rotator = "no-such-rotator"

[[rules]]
match = "c/x**"
rotator = 7

[[rules]]
match = "ok/*"
rotator = "random-password"
[rules.options]
lowercase = false
uppercase = false
digits = false
symbols = false

[[rules]]
match = "ok/*"
rotator = "random-password"
options = "nope"
"""
    with pytest.raises(ConfigError) as info:
        table(text)
    problems = info.value.problems
    assert all(p.startswith("rotation.toml: ") for p in problems)
    expected = [
        "unknown top-level key 'colour'",
        "rule 1: typo_key: unknown key",
        "rule 1: match: 'a//b' has an empty segment",
        "rule 1: grace_period: 'two days' is not a duration",
        "rule 1: options.length: Input should be greater than or equal to 12",
        "rule 1: options.colour: Extra inputs are not permitted",
        "rule 2: match: missing or not a string",
        "rule 2: rotator: 'no-such-rotator': no such rotator is installed",
        "rule 3: match: 'c/x**' segment 'x**': ** must be a whole segment",
        "rule 3: rotator: missing or not a string",
        "rule 4: options: every character class is off",
        "rule 5: options: must be a table",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize("grace", ["3651d", "999999999d999999999h"])
def test_a_grace_period_over_the_maximum_is_a_problem_line(grace: str) -> None:
    text = f'[[rules]]\nmatch = "a/*"\nrotator = "random-password"\ngrace_period = "{grace}"\n'
    with pytest.raises(ConfigError) as info:
        table(text)
    assert info.value.problems == [
        f"rotation.toml: rule 1: grace_period: {grace!r} is longer than the maximum duration, "
        "3650d (10 years)"
    ]


def test_repeated_match_is_a_problem() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "random-password"\n' * 2
    with pytest.raises(ConfigError, match=r"rule 2: match: repeats rule 1"):
        table(text)


def test_missing_rules_and_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\[\\[rules\\]\\]"):
        table("")
    with pytest.raises(ConfigError, match="not valid TOML"):
        table("[[rules]\n")
    with pytest.raises(ConfigError, match="must be an array of tables"):
        table("rules = 3\n")
    with pytest.raises(ConfigError, match="cannot read the routing file"):
        RoutingTable.load(tmp_path / "absent.toml", ROTATORS)


def test_load_reports_an_uninstalled_rotator_with_the_installed_ones(tmp_path: Path) -> None:
    path = tmp_path / "rotation.toml"
    path.write_text('[[rules]]\nmatch = "a/*"\nrotator = "acme-token"\n')
    with pytest.raises(ConfigError) as info:
        RoutingTable.load(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: rule 1: rotator: 'acme-token': no such rotator")
    assert "random-password" in problem
