"""What ``rotate --wait`` tells on-call to do next when a rotation ended badly."""

from __future__ import annotations

from orchestrator.cli.rotate import next_step
from orchestrator.routing import NO_RULE
from orchestrator.state.records import RunRecord

HERE = "rule 2 ('apps/*') of rotation.toml"


def skipped(reason: str) -> RunRecord:
    return RunRecord(rotation_id="r1", path="apps/a", state="skipped", last_error=reason)


def test_a_rule_the_worker_lacks_is_named_with_how_to_reload() -> None:
    hint = next_step(skipped(f"{NO_RULE} (this worker's table: ...)"), HERE)
    assert hint.startswith(f"{HERE} routes apps/a, but the worker that took the request")
    assert "routing_reload_rejected" in hint and "check-config" in hint
    assert "systemctl reload scaivault-rotator-worker" in hint and "`rotate apps/a`" in hint


def test_other_skips_keep_the_usual_hint() -> None:
    busy = next_step(skipped("rotation r0 is grace on this path"), HERE)
    assert busy.startswith("`status apps/a` shows")
    assert next_step(skipped(NO_RULE)).startswith("`status apps/a` shows")
