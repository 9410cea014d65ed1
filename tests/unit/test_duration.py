from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.duration import MAX_DURATION, format_duration, parse_duration


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


def test_the_maximum_is_accepted() -> None:
    assert parse_duration("3650d") == MAX_DURATION == timedelta(days=3650)
    assert parse_duration("3649d23h59m60s") == MAX_DURATION


@pytest.mark.parametrize(
    "text", ["3650d1s", "3651d", "87601h", "2914000d", "999999999d", "999999999d999999999h"]
)
def test_longer_than_the_maximum_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"longer than the maximum duration, 3650d \(10 years\)"):
        parse_duration(text)


@given(st.text(max_size=40))
def test_any_text_gives_a_bounded_duration_or_a_value_error(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) <= parsed <= MAX_DURATION


@given(st.lists(st.tuples(st.integers(0, 10**10), st.sampled_from("dhms")), max_size=5))
def test_any_unit_list_gives_a_bounded_duration_or_a_value_error(
    parts: list[tuple[int, str]],
) -> None:
    text = "".join(f"{number}{unit}" for number, unit in parts)
    try:
        parsed = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) <= parsed <= MAX_DURATION
