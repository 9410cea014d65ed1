"""Rule globs: which paths they match, which globs are refused, and polynomial matching."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.routing import RoutingTable, check_glob, matching
from rotators.random_password import RandomPasswordRotator

ROTATORS = {"random-password": RandomPasswordRotator()}


def table(text: str) -> RoutingTable:
    return RoutingTable.parse(text, source="rotation.toml", rotators=ROTATORS)


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


@pytest.mark.parametrize("glob", ["", "/a", "a/", "a b", "a/?", "a/[bc]", "a/../b", "a/b**"])
def test_check_glob_refuses(glob: str) -> None:
    assert check_glob(glob) is not None


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
    assert matching.glob_matches(pattern, segments) is reference_match(pattern, segments)


def test_several_globstars_on_a_long_path_take_polynomial_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every step compares one glob segment with one path segment; trying every split of each
    ``**`` would compare about C(26, 6) = 230230 times here."""
    pattern, segments = ("**",) * 6 + ("x",), ("a",) * 20
    steps = []
    compare = matching.segment_matches

    def counted(glob: str, segment: str) -> bool:
        steps.append((glob, segment))
        return compare(glob, segment)

    monkeypatch.setattr(matching, "segment_matches", counted)
    for path, expected in ((segments, False), ((*segments, "x"), True)):
        steps.clear()
        assert matching.glob_matches(pattern, path) is expected
        assert len(steps) <= (len(pattern) + 1) * (len(path) + 1)
