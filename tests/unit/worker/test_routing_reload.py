"""A process's routing table follows its file: a valid change is adopted in place, an invalid
one is refused loudly (every problem) with the table in use kept, and a skip for lack of a rule
names the rule the file on disk has that the table lacks."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.routing import NO_RULE, RoutingOrigin, RoutingTable, unrouted_reason
from orchestrator.worker import routing_reload
from orchestrator.worker.routing_reload import RoutingReloader

DB = '[[rules]]\nmatch = "apps/*/db"\nrotator = "random-password"\n'
CACHE = '[[rules]]\nmatch = "apps/*/cache"\nrotator = "random-password"\n'
UNKNOWN = '[[rules]]\nmatch = "apps/*/queue"\nrotator = "no-such-rotator"\n'


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def named(stream: io.StringIO, event: str) -> list[dict[str, object]]:
    return [e for e in events(stream) if e.get("event") == event]


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and make sure the ``stat`` differs, however coarse the clock."""
    before = os.stat(path).st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    path = tmp_path / "rotation.toml"
    rewrite(path, DB)
    return path


@pytest.fixture
def announced() -> Iterator[list[RoutingOrigin]]:
    heard: list[RoutingOrigin] = []
    routing_reload.LISTENERS.append(heard.append)
    yield heard
    routing_reload.LISTENERS.remove(heard.append)


def test_a_valid_change_is_adopted_in_place_and_announced(
    routing_file: Path, announced: list[RoutingOrigin], log_stream: io.StringIO
) -> None:
    reloader = RoutingReloader.load(routing_file)
    table = reloader.table
    assert table.match("apps/a/cache") is None and len(announced) == 1
    first = announced[0].sha256

    assert reloader.refresh() is False, "nothing changed"
    rewrite(routing_file, DB + CACHE)
    assert reloader.refresh() is True
    assert reloader.table is table, "whoever holds the table routes with the new rules"
    assert table.match("apps/a/cache") is not None
    assert [o.sha256 for o in announced][1:] != [first] and len(announced) == 2
    assert table.origin is not None and table.origin.sha256 == announced[1].sha256
    [reloaded] = named(log_stream, "routing_reloaded")
    assert reloaded["previous"] == first and reloaded["rules"] == 2


def test_an_invalid_file_keeps_the_table_and_logs_every_problem_once(
    routing_file: Path, announced: list[RoutingOrigin], log_stream: io.StringIO
) -> None:
    reloader = RoutingReloader.load(routing_file)
    rewrite(routing_file, DB + UNKNOWN + 'bogus = "x"\n')
    assert reloader.refresh() is False
    assert reloader.table.match("apps/a/db") is not None, "the old table is still in use"
    assert reloader.table.match("apps/a/queue") is None
    problems = [e["problem"] for e in named(log_stream, "routing_reload_problem")]
    assert len(problems) == 2
    assert any("no-such-rotator" in str(p) for p in problems)
    [rejected] = named(log_stream, "routing_reload_rejected")
    assert rejected["level"] == "error" and rejected["problems"] == 2
    assert rejected["kept"] == announced[0].sha256 and len(announced) == 1

    os.utime(routing_file)  # touched, same content: not logged again
    assert reloader.refresh(force=True) is False
    assert len(named(log_stream, "routing_reload_rejected")) == 1

    rewrite(routing_file, DB + CACHE)  # fixed: adopted
    assert reloader.refresh() is True and reloader.table.match("apps/a/cache") is not None


def test_a_missing_file_keeps_the_table(routing_file: Path, log_stream: io.StringIO) -> None:
    reloader = RoutingReloader.load(routing_file)
    routing_file.unlink()
    assert reloader.refresh() is False
    assert reloader.table.match("apps/a/db") is not None
    assert named(log_stream, "routing_unreadable")


def test_sighup_makes_the_next_poll_read_the_file(
    routing_file: Path, log_stream: io.StringIO
) -> None:
    reloader = RoutingReloader.load(routing_file)
    reloader.poll()
    assert not named(log_stream, "routing_unchanged"), "no stat change, no SIGHUP: not read"
    reloader.on_sighup()
    reloader.poll()
    [unchanged] = named(log_stream, "routing_unchanged")
    assert unchanged["sha256"] == reloader.table.origin.sha256  # type: ignore[union-attr]
    assert reloader.requested is False


def test_current_follows_the_file_before_each_use(routing_file: Path) -> None:
    table = routing_reload.current(routing_file)
    rewrite(routing_file, DB + CACHE)
    assert routing_reload.current(routing_file) is table
    assert table.match("apps/a/cache") is not None


def test_a_skip_names_the_file_the_worker_runs(routing_file: Path) -> None:
    table = RoutingTable.load(routing_file)
    reason = unrouted_reason(table, "apps/a/cache")
    assert reason.startswith(NO_RULE)
    assert str(routing_file) in reason and table.origin is not None
    assert table.origin.short in reason and "has rule" not in reason
    assert unrouted_reason(RoutingTable.parse(DB), "apps/a/cache") == NO_RULE


def test_a_skip_names_a_rule_of_an_invalid_file_on_disk(routing_file: Path) -> None:
    table = RoutingTable.load(routing_file)
    rewrite(routing_file, DB + UNKNOWN)
    reason = unrouted_reason(table, "apps/a/queue")
    assert "has rule 2 (match 'apps/*/queue')" in reason
    assert "this worker has not loaded" in reason
    assert "that file is invalid (1 problem(s), first:" in reason and "no-such-rotator" in reason


def test_a_skip_names_a_rule_added_a_moment_ago(routing_file: Path) -> None:
    table = RoutingTable.load(routing_file)
    rewrite(routing_file, CACHE + DB)
    reason = unrouted_reason(table, "apps/a/cache")
    assert "has rule 1 (match 'apps/*/cache')" in reason and "changed a moment ago" in reason
