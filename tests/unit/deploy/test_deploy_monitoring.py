"""deploy/monitoring: alert rules that promtool tests, a PodMonitor and PrometheusRule for the
Operator, the compose profile's Prometheus and Grafana, and a dashboard whose queries parse.

What real processes expose is checked against the rules and the dashboard in
tests/integration/deploy/test_monitoring_live.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.settings import Settings
from tests.fixtures.deploy import (
    DEPLOY,
    by_kind,
    deployment,
    k8s_resources,
    load_yaml,
    pod_spec,
)
from tests.fixtures.monitoring import (
    METRIC_NAME,
    MONITORING,
    RULES,
    alerts,
    base_names,
    check_queries_parse,
    dashboard,
    exported_metric_names,
    panel_queries,
    rule_groups,
    run_promtool,
)

#: The alerts the deployment promises (deploy/README.md#monitoring-and-alerting).
PROMISED = {
    "RotationFailed",
    "RotationNeedsAttention",
    "FinalizationOverdue",
    "PendingEventsBacklog",
    "WebhookUnavailable",
    "NoWorkerHeartbeat",
    "SweepNotRunning",
    "CredentialLeftValid",
}


def _exported() -> set[str]:
    return exported_metric_names()


def test_the_promised_alerts_exist_and_name_only_exported_metrics() -> None:
    assert set(alerts()) >= PROMISED
    for name, rule in alerts().items():
        assert base_names(set(METRIC_NAME.findall(rule["expr"]))) <= _exported(), name
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_the_rules_pass_promtool_check(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", RULES)


def test_every_alert_passes_its_promtool_unit_tests(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", "rules.test.yaml", cwd=MONITORING)
    assert "SUCCESS" in output
    tests = yaml.safe_load((MONITORING / "rules.test.yaml").read_text(encoding="utf-8"))
    tested = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])}
    assert tested == set(alerts())


def test_promtool_unit_tests_catch_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / "rules.yaml")
    text = (MONITORING / "rules.test.yaml").read_text(encoding="utf-8")
    broken = text.replace("rotator: random-password}", "rotator: salesforce-oauth}", 1)
    assert broken != text
    (tmp_path / "rules.test.yaml").write_text(broken)
    with pytest.raises(AssertionError, match="FAILED"):
        run_promtool(promtool, "test", "rules", "rules.test.yaml", cwd=tmp_path)


def test_the_prometheus_rule_holds_the_rules_file_word_for_word() -> None:
    rule = load_yaml(MONITORING / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rule_groups()


def test_the_component_is_in_the_example_overlay() -> None:
    docs = k8s_resources("overlays/example")
    kinds = {doc["kind"] for doc in docs}
    assert {"PodMonitor", "PrometheusRule"} <= kinds


def test_the_pod_monitor_scrapes_the_ports_receiver_and_worker_name() -> None:
    docs = k8s_resources("base")
    [monitor] = yaml.safe_load_all((MONITORING / "podmonitor.yaml").read_text(encoding="utf-8"))
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {
        e["port"]: e.get("path", "/metrics") for e in monitor["spec"]["podMetricsEndpoints"]
    }
    for role, port in (("receiver", "http"), ("worker", "metrics")):
        workload = deployment(docs, role)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), role
        [container] = pod_spec(workload)["containers"]
        assert port in {p["name"] for p in container["ports"]}, role
        assert endpoints[port] == "/metrics"
    assert not by_kind(docs, "PodMonitor"), "the base does not need the Operator"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")
    return data


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> file or directory under deploy/ of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = DEPLOY / source
    return mounts


def test_the_compose_monitoring_profile_wires_prometheus_and_grafana(promtool: str) -> None:
    services = _compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == ["monitoring"] and grafana["profiles"] == ["monitoring"]
    assert all(
        not s.get("profiles") for n, s in services.items() if n not in {"prometheus", "grafana"}
    )
    prom_mounts, grafana_mounts = _mounts(prometheus), _mounts(grafana)
    assert all(path.exists() for path in [*prom_mounts.values(), *grafana_mounts.values()])
    config_path = prom_mounts["/etc/prometheus/prometheus.yml"]
    run_promtool(promtool, "check", "config", config_path)
    assert prom_mounts["/etc/prometheus/rules.yaml"] == RULES

    config = load_yaml(config_path)
    targets = set()
    for job in config["scrape_configs"]:
        targets |= {t for c in job.get("static_configs", []) for t in c["targets"]}
        targets |= {f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]}
    receiver_port = services["receiver"]["command"][
        services["receiver"]["command"].index("--port") + 1
    ]
    metrics_port = Settings.model_fields["rotator_metrics_port"].default
    assert targets == {f"receiver:{receiver_port}", f"worker:{metrics_port}"}

    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    [provider] = load_yaml(provisioning / "dashboards" / "scaivault-rotator.yaml")["providers"]
    dashboards = grafana_mounts[provider["options"]["path"]]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).is_file()


def test_the_dashboard_covers_the_operators_questions() -> None:
    board = dashboard()
    queries = " ".join(expr for _, expr in panel_queries())
    for metric in (
        "rotations_total",
        "step_duration_seconds_bucket",
        "finalize_waiting",
        "finalize_waiting_longest_seconds",
        "pending_finalizations",
        "receiver_events_total",
        "queue_length",
    ):
        assert metric in queries, metric
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_dashboard_query_parses_and_names_exported_metrics(
    promtool: str, tmp_path: Path
) -> None:
    queries = [expr for _, expr in panel_queries()]
    check_queries_parse(promtool, queries, tmp_path)
    for title, expr in panel_queries():
        assert base_names(set(METRIC_NAME.findall(expr))) <= _exported(), title


def test_a_broken_query_does_not_parse(promtool: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        check_queries_parse(promtool, ["sum by (le (rate(x[5m]))"], tmp_path)
