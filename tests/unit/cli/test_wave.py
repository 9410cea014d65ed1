"""How a wave's runs are counted: the columns of ``rotate --prefix`` and ``status --prefix``."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from orchestrator.cli import trigger
from orchestrator.cli.wave import Run, by_target, tally
from orchestrator.state import keys
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
    from orchestrator.cli.rotate_prefix import WaveMeter, _clock_text

    meter = WaveMeter(total=100, as_json=True)
    meter.started -= 10.0  # ten seconds in
    counted = tally([Run(f"r{i}", f"a/{i}", "grace") for i in range(50)])
    line = meter.line(counted)
    assert "50 stored" in line and "5.0/s" in line and "ETA 0:10" in line
    assert _clock_text(3725) == "1:02:05" and _clock_text(59.6) == "1:00"


def test_ctrl_c_while_queueing_says_how_many_were_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each chunk is one transaction: a Ctrl-C during the second leaves the first queued, whole,
    and says so (the CLI then tells on-call how to follow and how to queue the rest)."""
    monkeypatch.setattr(trigger, "PUBLISH_CHUNK", 2)
    client = fakeredis.FakeRedis()
    sent = []

    class Interrupting:
        """On-call's Redis, interrupted by Ctrl-C while the second transaction is sent."""

        def pipeline(self, transaction: bool = True) -> Any:
            pipe = client.pipeline(transaction=transaction)
            real = pipe.execute

            def execute() -> Any:
                if sent:
                    raise KeyboardInterrupt
                sent.append(1)
                return real()

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

    class OnCall:
        redis = Interrupting()

    requests = [
        trigger.manual_request(f"apps/p{i}", None, grace=None, reason=None, actor="alice")
        for i in range(5)
    ]
    with pytest.raises(trigger.PublishInterrupted) as stop:
        trigger.publish_manual(OnCall(), requests)  # type: ignore[arg-type]
    assert (stop.value.queued, stop.value.chunk) == (2, 2)
    assert client.llen(keys.TASK_QUEUE) == 2 and client.zcard(keys.PENDING) == 2
