"""What ``rotate --wait`` tells on-call to do next when a rotation ended badly."""

from __future__ import annotations

from orchestrator.cli.rotate import stale_rule_step
from orchestrator.routing import NO_RULE
from orchestrator.state.records import RunRecord

HERE = "rule 2 ('apps/*') of rotation.toml"


def skipped(reason: str) -> RunRecord:
    return RunRecord(rotation_id="r1", path="apps/a", state="skipped", last_error=reason)


def test_a_rule_the_worker_lacks_is_named_with_how_to_reload() -> None:
    hint = stale_rule_step(skipped(f"{NO_RULE} (this worker's table: ...)"), HERE)
    assert hint is not None
    assert hint.startswith(f"{HERE} routes apps/a, but the worker that took the request")
    assert "routing_reload_rejected" in hint and "check-config" in hint
    assert "systemctl reload scaivault-rotator-worker" in hint and "`rotate apps/a`" in hint


def test_other_skips_keep_the_usual_hint() -> None:
    assert stale_rule_step(skipped("rotation r0 is grace on this path"), HERE) is None
    assert stale_rule_step(skipped(NO_RULE), None) is None
