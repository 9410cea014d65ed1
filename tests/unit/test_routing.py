"""The routing file: glob matching, first-match-wins, and every problem reported at once."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import routing
from orchestrator.errors import ConfigError
from orchestrator.routing import RoutingTable, check_glob
from rotators import RotationContext, SecretData, Usage
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


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("a/*", "a/b", True),
        ("a/*", "a", False),
        ("a/*", "a/b/c", False),
        ("a/*/c", "a/b/c", True),
        ("a/**", "a", True),
        ("a/**", "a/b/c/d", True),
        ("a/**/c", "a/c", True),
        ("a/**/c", "a/x/y/c", True),
        ("a/**/c", "a/x/y/d", False),
        ("db-*/pw", "db-orders/pw", True),
        ("db-*/pw", "cache-orders/pw", False),
        ("exact/path", "exact/path", True),
        ("exact/path", "exact/pathx", False),
        ("a.b/c", "axb/c", False),
    ],
)
def test_glob_semantics(glob: str, path: str, matches: bool) -> None:
    text = f'[[rules]]\nmatch = "{glob}"\nrotator = "random-password"\n'
    assert (table(text).match(path) is not None) is matches


def test_no_rule_matches() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "random-password"\n'
    assert table(text).match("b/c") is None


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


def test_load_discovers_only_the_rotators_the_file_names(tmp_path: Path) -> None:
    path = tmp_path / "rotation.toml"
    path.write_text('[[rules]]\nmatch = "a/*"\nrotator = "random-password"\n')
    loaded = RoutingTable.load(path)
    rule = loaded.match("a/b")
    assert rule is not None
    assert isinstance(loaded.rotator_for(rule), RandomPasswordRotator)
    assert set(loaded.rotators) == {"random-password"}


def test_load_reports_an_uninstalled_rotator_with_the_installed_ones(tmp_path: Path) -> None:
    path = tmp_path / "rotation.toml"
    path.write_text('[[rules]]\nmatch = "a/*"\nrotator = "acme-token"\n')
    with pytest.raises(ConfigError) as info:
        RoutingTable.load(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: rule 1: rotator: 'acme-token': no such rotator")
    assert "random-password" in problem


def test_prefixes_for_listing() -> None:
    assert table().prefixes() == [""]
    rules = "".join(
        f'[[rules]]\nmatch = "{glob}"\nrotator = "random-password"\n'
        for glob in ("apps/db-*/pw", "integrations/sf/*", "apps/**", "integrations/sfx/x")
    )
    assert table(rules).prefixes() == ["apps", "integrations/sf", "integrations/sfx/x"]


@pytest.mark.parametrize("glob", ["", "/a", "a/", "a b", "a/?", "a/[bc]", "a/../b", "a/b**"])
def test_check_glob_refuses(glob: str) -> None:
    assert check_glob(glob) is not None


def test_rules_name_rotators_by_their_routing_key() -> None:
    text = '[[rules]]\nmatch = "a/*"\nrotator = "alias"\n'
    routing = RoutingTable.parse(text, rotators={"alias": RandomPasswordRotator()})
    rule = routing.match("a/b")
    assert rule is not None and rule.rotator == "alias"
    assert isinstance(routing.rotator_for(rule), RandomPasswordRotator)


# --- the glob matcher against a plain reference --------------------------------------------


def reference_match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    """Glob semantics spelled out: ``**`` tries every split (exponential, fine when small)."""
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(reference_match(rest, segments[i:]) for i in range(len(segments) + 1))
    if not segments or not fnmatch.fnmatchcase(segments[0], head):
        return False
    return reference_match(rest, segments[1:])


glob_segments = st.sampled_from(["a", "b", "ab", "*", "**", "a*", "*b", "*a*"])
path_segments = st.sampled_from(["a", "b", "ab", "ba", "aab", ""])


@settings(max_examples=500)
@given(st.lists(glob_segments, max_size=7), st.lists(path_segments, max_size=8))
def test_the_matcher_agrees_with_the_reference(glob: list[str], path: list[str]) -> None:
    pattern, segments = tuple(glob), tuple(path)
    assert routing._match(pattern, segments) is reference_match(pattern, segments)


def test_several_globstars_on_a_long_path_take_polynomial_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every step compares one glob segment with one path segment; trying every split of each
    ``**`` would compare about C(26, 6) = 230230 times here."""
    pattern, segments = ("**",) * 6 + ("x",), ("a",) * 20
    steps = []
    compare = routing._segment_matches

    def counted(glob: str, segment: str) -> bool:
        steps.append((glob, segment))
        return compare(glob, segment)

    monkeypatch.setattr(routing, "_segment_matches", counted)
    for path, expected in ((segments, False), ((*segments, "x"), True)):
        steps.clear()
        assert routing._match(pattern, path) is expected
        assert len(steps) <= (len(pattern) + 1) * (len(path) + 1)


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
