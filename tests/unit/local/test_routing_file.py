"""The routing-file writer the sandbox and the tests share: what it writes, tomllib reads back."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.local.routing_file import routing_toml, toml_value
from orchestrator.routing import RoutingTable

scalars = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"])),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.one_of(scalars, st.lists(scalars, max_size=3)),
        max_size=5,
    )
)
def test_any_options_read_back_unchanged(options: dict[str, Any]) -> None:
    rule = {"match": 'a "quoted"\\path/*', "rotator": "x", "options": options}
    document = tomllib.loads(routing_toml([rule], comment="generated"))
    assert document["rules"] == [rule if options else {k: rule[k] for k in ("match", "rotator")}]


def test_tricky_strings_are_escaped() -> None:
    assert toml_value('a"b\\c\nd\x7f') == '"a\\"b\\\\c\\u000ad\\u007f"'
    assert toml_value(["app_blue", 'a"b']) == '["app_blue", "a\\"b"]'
    with pytest.raises(TypeError):
        toml_value(object())


def test_lists_and_sub_tables_read_back() -> None:
    options = {"users": ["app_a", 'b"q'], "host": "db", "password": {"length": 40, "x": [1]}}
    rule = {"match": "db/*", "rotator": "x", "finalize_recheck": "1s", "options": options}
    assert tomllib.loads(routing_toml([rule]))["rules"] == [rule]


def test_the_text_is_a_valid_routing_file() -> None:
    text = routing_toml(
        [
            {"match": "db/*", "rotator": "random-password", "grace_period": "1h",
             "options": {"length": 24, "field": "password"}},
            {"match": "fleet/**", "rotator": "random-password"},
        ]
    )  # fmt: skip
    table = RoutingTable.parse(text)
    assert [rule.match for rule in table.rules] == ["db/*", "fleet/**"]
