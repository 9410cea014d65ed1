from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("48h", timedelta(hours=48)),
        ("30m", timedelta(minutes=30)),
        ("15s", timedelta(seconds=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_parses_spec_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "10", "5x", "1m1h", "1h1h", "-5s", "1.5h", "1h 30m"])
def test_rejects_bad_text_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 90d"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**8))
def test_format_round_trips(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta
