"""Pure parts of the on-call commands: overdue detection, rollback metadata, check-config
helpers, and usage errors that never reach Redis or ScaiVault."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from orchestrator.cli.check_config import Report
from orchestrator.cli.main import cli
from orchestrator.cli.session import OVERDUE_SLACK_SECONDS, is_overdue
from orchestrator.engine.rollback import _metadata as _rollback_metadata
from orchestrator.routing import literal_prefix
from orchestrator.state.records import RunRecord
from rotators.contract import SecretVersion
from rotators.secret import SecretData
from rotators.versions import ENGINE_FIELDS


def _record(state: str, finalize_after: datetime | None) -> RunRecord:
    return RunRecord(
        rotation_id="r1",
        path="a/b",
        state=state,
        from_version=1,
        new_version=2,
        finalize_after=finalize_after.isoformat() if finalize_after else None,
    )


def test_overdue_only_in_grace_and_past_the_slack() -> None:
    now = time.time()
    past = datetime.fromtimestamp(now - OVERDUE_SLACK_SECONDS - 5, UTC)
    recent = datetime.fromtimestamp(now - 5, UTC)
    assert is_overdue(_record("grace", past), now)
    assert not is_overdue(_record("grace", recent), now)
    assert not is_overdue(_record("done", past), now)
    assert not is_overdue(_record("grace", None), now)
    assert is_overdue(_record("finalizing", past - timedelta(days=1)), now)


def test_overdue_reads_z_suffixed_and_naive_times_as_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run records hold aware UTC times; a ``Z`` suffix or no offset at all means UTC too,
    never the machine's local zone."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        now = time.time()
        for seconds_ago, overdue in ((5, False), (OVERDUE_SLACK_SECONDS + 5, True)):
            due = datetime.fromtimestamp(now - seconds_ago, UTC).replace(tzinfo=None)
            for text in (due.isoformat(), due.isoformat() + "Z"):
                record = RunRecord(rotation_id="r1", path="a/b", state="grace", finalize_after=text)
                assert is_overdue(record, now) is overdue, text
    finally:
        monkeypatch.undo()
        time.tzset()


def test_rollback_metadata_keeps_the_callers_and_drops_the_engines() -> None:
    old = SecretVersion(
        path="a/b",
        version=1,
        data=SecretData(password="x"),
        metadata={"description": "db", "tags": ["t"], "finalize_after": "2026-01-01T00:00:00Z",
                  "rotation_id": "older", "rotator": "random-password", "previous_version": 0},
    )  # fmt: skip
    meta = _rollback_metadata(old, _record("grace", None))
    assert meta["description"] == "db" and meta["tags"] == ["t"]
    assert not set(ENGINE_FIELDS) - {"rotated_by"} & set(meta)
    assert meta["rolled_back_rotation_id"] == "r1" and meta["restored_version"] == 1
    assert meta["rotated_by"] == "scaivault-rotator"


@pytest.mark.parametrize(
    ("glob", "prefix"),
    [("integrations/salesforce/*", "integrations/salesforce"), ("**", ""), ("a/b/c", "a/b/c")],
)
def test_literal_prefix(glob: str, prefix: str) -> None:
    assert literal_prefix(glob) == prefix


def test_report_exit_codes() -> None:
    assert Report(passed=["x"]).exit_code == 0
    assert Report(reach_problems=["redis down"]).exit_code == 1
    assert Report(config_problems=["bad"], reach_problems=["down"]).exit_code == 2
    text = Report(passed=["fine"], reach_problems=["down"]).render()
    assert "ok       fine" in text and "PROBLEM  down" in text and "1 problem(s)" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["rotate"], "either PATH or --prefix"),
        (["rotate", "a/b", "--prefix", "a"], "either PATH or --prefix"),
        (["rotate", "a/b", "--grace", "soon"], "is not a duration"),
        (["rotate", "a/b", "--grace", "3651d"], "maximum duration, 3650d (10 years)"),
        (["rotate", "a/b", "--grace", "999999999d999999999h"], "maximum duration, 3650d"),
        (["rotate", "a/b", "--concurrency", "0"], "--concurrency"),
        (["rotate", "a/b", "--via-vault", "--grace", "1h"], "rotation policy sets"),
        (["history", "a/b", "--limit", "0"], "--limit"),
        (["finalize"], "Missing argument"),
    ],
)
def test_bad_usage_exits_2_before_touching_anything(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert needle in result.output


def test_every_printing_command_takes_json() -> None:
    for name in ("rotate", "status", "history", "finalize", "retry", "cancel", "rollback",
                 "rotators", "check-config", "demo"):  # fmt: skip
        params = {p.name for p in cli.commands[name].params}
        assert "as_json" in params, name


def test_progress_on_a_terminal_keeps_a_live_status_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator.cli.rotate import Progress

    progress = Progress(as_json=False)
    progress.live = True
    progress.tick("minting (step mint, attempt 1)")
    progress.show("a/b: step_done step=mint")
    progress.done()
    out = capsys.readouterr().out
    assert "... minting (step mint, attempt 1)" in out and "\r\x1b[K" in out
    assert "s] a/b: step_done step=mint\n" in out


def test_progress_with_json_keeps_stdout_for_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.rotate import Progress

    progress = Progress(as_json=True)
    progress.tick("minting")
    progress.show("a/b: grace")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "a/b: grace\n"
