"""How a wave's runs are counted: the columns of ``rotate --prefix`` and ``status --prefix``."""

from __future__ import annotations

import pytest

from orchestrator.cli.wave import Run, by_target, tally
from orchestrator.state.messages import RotateRequest


@pytest.mark.parametrize(
    ("state", "slot_wait", "column"),
    [
        (None, None, "queued"),
        ("queued", None, "queued"),
        ("queued", "db:5432", "waiting for a slot"),
        ("minting", None, "running"),
        ("storing", None, "running"),
        ("grace", None, "stored"),
        ("done", None, "stored"),
        ("failed", None, "failed"),
        ("skipped", None, "failed"),
        ("needs_attention", None, "failed"),
    ],
)
def test_each_state_counts_in_one_column(
    state: str | None, slot_wait: str | None, column: str
) -> None:
    assert Run("r", "a/b", state, slot_wait).column == column


def test_a_tally_counts_and_lists_failures() -> None:
    counted = tally([Run("r1", "a/1", "grace"), Run("r2", "a/2", "failed", last_error="denied"),
                     Run("r3", "a/3", None)])  # fmt: skip
    assert counted.total == 3 and counted.finished == 2
    assert counted.line() == "1 queued, 0 running, 0 waiting for a slot, 1 stored, 1 failed"
    assert counted.as_dict()["failures"] == [
        {"path": "a/2", "rotation_id": "r2", "state": "failed", "error": "denied"}
    ]


def test_the_summary_per_target_names_the_oldest_active_run() -> None:
    rows = [
        {"path": "a/1", "state": "minting", "target": "db", "updated_at": "2026-12-03T05:00:00"},
        {"path": "a/2", "state": "queued", "target": "db", "updated_at": "2026-12-03T04:00:00"},
        {"path": "a/3", "state": "failed", "target": None, "updated_at": "2026-12-03T03:00:00"},
    ]
    summary = by_target(rows)
    assert summary[0]["target"] == "(no rule)" and summary[0]["oldest"] is None
    assert summary[1]["states"] == {"minting": 1, "queued": 1}
    assert summary[1]["oldest"]["path"] == "a/2"


def test_a_batch_cap_travels_only_when_set() -> None:
    assert "max_concurrent" not in RotateRequest("a/b").to_kwargs()
    sent = RotateRequest("a/b", max_concurrent=4).to_kwargs()
    assert RotateRequest.from_kwargs(sent).max_concurrent == 4 and not RotateRequest.unknown(sent)
    for garbled in ("many", 0, -3, True, 2.5, None):
        kwargs = {**sent, "max_concurrent": garbled}
        assert RotateRequest.from_kwargs(kwargs).max_concurrent is None


def test_the_meter_shows_the_rate_and_an_eta() -> None:
    from orchestrator.cli.rotate import WaveMeter, _clock_text

    meter = WaveMeter(total=100, as_json=True)
    meter.started -= 10.0  # ten seconds in
    counted = tally([Run(f"r{i}", f"a/{i}", "grace") for i in range(50)])
    line = meter.line(counted)
    assert "50 stored" in line and "5.0/s" in line and "ETA 0:10" in line
    assert _clock_text(3725) == "1:02:05" and _clock_text(59.6) == "1:00"
