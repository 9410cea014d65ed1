"""The one ISO-time parser: the times run records and version metadata hold, and garbage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.state.records import iso_ms, now_iso
from rotators.versions import parse_time


def test_the_stores_times_parse_as_fromisoformat_does() -> None:
    for text in (now_iso(), iso_ms("1767225600123")):
        assert parse_time(text) == datetime.fromisoformat(text)
    assert parse_time(iso_ms("1767225600123")) == datetime(2026, 1, 1, 0, 0, 0, 123000, UTC)


def test_a_z_suffix_is_utc_and_an_offset_is_kept() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    east = parse_time("2026-01-01T09:00:00+09:00")
    assert east is not None and east.utcoffset() == timedelta(hours=9)
    assert east == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_naive_time_is_utc() -> None:
    parsed = parse_time("2026-01-01T00:00:00")
    assert parsed == datetime(2026, 1, 1, tzinfo=UTC)
    assert parsed is not None and parsed.tzinfo is UTC
    assert parsed != datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=9)))


@pytest.mark.parametrize("value", [None, "", "tomorrow", "2026-13-01T00:00:00", 7, "9" * 65])
def test_garbage_is_none_never_an_error(value: object) -> None:
    assert parse_time(value) is None
