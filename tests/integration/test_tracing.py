"""OpenTelemetry on real processes: one webhook gives one trace from the receiver's request
through the task message's ``traceparent`` to the worker's task, each engine step, the
rotator's calls inside it and the ScaiVault requests, with nothing secret in any span."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.receiver import WEBHOOK_SECRET, ReceiverProcess
from tests.fixtures.spans import exporter_env, read_spans
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration

STEPS = {"rotation.mint", "rotation.verify", "rotation.store"}


def _find(spans: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = [span for span in spans if test(span)]
    assert found, f"no such span among {sorted({s['name'] for s in spans})}"
    return found[0]


def test_one_trace_from_the_webhook_to_the_engine_steps_and_scaivault(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    spans_dir = stack.tmp_path / "spans"
    stack.env.update(exporter_env(stack.tmp_path / "plugins", spans_dir))
    stack.routing(stack.ledger_rule())
    initial = "traced-initial-secret-0"
    stack.emulator.put_secret("apps/traced/db", {"password": initial})
    stack.worker()
    receiver = ReceiverProcess(stack.tmp_path, stack.env).start()
    try:
        assert receiver.post("evt_traced_1", path="apps/traced/db", version=1).status_code == 202
        record = stack.wait_run("apps/traced/db", ("grace", "done"))
    finally:
        receiver.child.stop()

    def complete() -> list[dict[str, Any]] | None:
        spans = read_spans(spans_dir)
        names = {span["name"] for span in spans}
        return spans if names >= STEPS and "run/scaivault.rotate" in names else None

    spans = stack.wait(complete, 60, "the worker's spans")
    request = _find(
        spans, lambda s: s["kind"] == "SERVER" and s["name"] == "POST /scaivault/events"
    )
    assert request["service"] == "scaivault-rotator-receiver"
    trace = [span for span in spans if span["trace_id"] == request["trace_id"]]
    task = _find(trace, lambda s: s["name"] == "run/scaivault.rotate")
    assert task["service"] == "scaivault-rotator-worker"
    assert task["parent_id"] in {s["span_id"] for s in trace if s["service"] == request["service"]}
    steps = {s["name"]: s for s in trace if s["name"] in STEPS}
    assert set(steps) == STEPS, "every engine step in the webhook's trace"
    assert steps["rotation.mint"]["attributes"]["rotation.id"] == record.rotation_id
    assert steps["rotation.mint"]["attributes"]["rotator"] == "test-ledger"
    for method in ("mint", "verify"):
        call = _find(trace, lambda s, m=method: s["name"] == f"rotator.{m}")
        assert call["parent_id"] == steps[f"rotation.{method}"]["span_id"], "inside its step"
        assert call["attributes"] == {"rotator": "test-ledger", "rotation.id": record.rotation_id}
    vault = [s for s in trace if s["kind"] == "CLIENT" and "/v1/secrets/" in str(s["attributes"])]
    methods = {
        s["attributes"].get("http.request.method", s["attributes"].get("http.method"))
        for s in vault
    }
    assert methods >= {"GET", "PUT"}, "ScaiVault's read and check-and-set write"
    ids = {s["span_id"] for s in trace}
    assert all(s["parent_id"] in ids for s in trace if s is not request), "one connected tree"

    data = stack.emulator.get_secret("apps/traced/db")["data"]
    text = "\n".join(map(str, spans))
    for value in (initial, data["password"], WEBHOOK_SECRET, stack.env["SCAIVAULT_TOKEN"]):
        assert value not in text
