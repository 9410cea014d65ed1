"""The alert rules and the dashboard against what real processes expose: series scraped from a
real worker (before and after a rotation of it failed) and a real receiver go into
``promtool test rules``, and every dashboard query names only series they expose."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.local.processes import free_port
from tests.fixtures.monitoring import (
    METRIC_NAME,
    RULES,
    alerts,
    check_queries_parse,
    panel_queries,
    run_promtool,
)
from tests.fixtures.receiver import LiveReceiver, event_body
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration

Series = dict[str, float]


def scrape(url: str) -> Series:
    """Every sample of ``url``'s exposition, keyed by its promtool series notation."""
    samples: Series = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=30).text):
        for sample in family.samples:
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def _values(before: float | None, after: float | None) -> str:
    """promtool values: 6 one-minute samples as scraped before, then 15 as scraped after."""
    first = "_x5" if before is None else f"{before:g}x5"
    return f"{first} {'_' if after is None else f'{after:g}'}x15"


def promtool_case(before: Series, after: Series, alert: str, labels: dict[str, str]) -> Any:
    """A promtool test: the scrapes a minute apart, the alert expected 10 minutes in."""
    rule = alerts()[alert]
    annotations = {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }
    series = [
        {"series": name, "values": _values(before.get(name), after.get(name))}
        for name in sorted(set(before) | set(after))
    ]
    expected = {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": alert, "exp_alerts": []},
                    {"eval_time": "10m", "alertname": alert, "exp_alerts": [expected]},
                ],
            }
        ],
    }


def test_alerts_and_dashboard_work_on_series_of_real_processes(
    engine_stack: EngineStack, receiver: LiveReceiver, promtool: str, tmp_path: Path
) -> None:
    stack = engine_stack
    port = free_port()
    stack.env["ROTATOR_METRICS_PORT"] = str(port)
    stack.routing(stack.ledger_rule())
    stack.emulator.put_secret("apps/fine/db", {"password": "fine-initial-0"})
    stack.start(workers=1)
    worker_url = f"http://127.0.0.1:{port}/metrics"
    stack.publish(path="apps/fine/db", event_id="evt_fine_1")
    stack.wait_run("apps/fine/db", "done")
    assert receiver.post(event_body("evt_live_1", path="apps/fine/db")).status_code == 202
    before = scrape(worker_url)

    stack.publish(path="apps/missing/db", event_id="evt_missing_1")  # no such secret: fails
    stack.wait_run("apps/missing/db", "failed")
    failed = 'scaivault_rotator_rotations_total{outcome="failed", rotator="test-ledger"}'
    after = stack.wait(lambda: (s := scrape(worker_url)).get(failed) == 1 and s, 60, "the count")

    case = promtool_case(before, after, "RotationFailed", {"rotator": "test-ledger"})
    (tmp_path / "live.test.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
    run_promtool(promtool, "test", "rules", tmp_path / "live.test.yaml")

    exposed = {name.partition("{")[0] for name in after} | set(scrape(receiver.url + "/metrics"))
    exposed = {name.partition("{")[0] for name in exposed}
    check_queries_parse(promtool, [expr for _, expr in panel_queries()], tmp_path)
    for title, expr in panel_queries():
        assert set(METRIC_NAME.findall(expr)) <= exposed, title
    for name, rule in alerts().items():
        named = set(METRIC_NAME.findall(rule["expr"]))
        assert named <= exposed, f"{name} watches {named - exposed}, which nothing exposes"
