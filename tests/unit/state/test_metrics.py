"""Worker metrics: Redis-kept counters and histograms, due-queue gauges, the HTTP endpoint."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.local.processes import free_port
from orchestrator.settings import Settings
from orchestrator.state import keys, metrics
from orchestrator.state.strays import Strays


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def scrape(client: redis.Redis) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry(client)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_outcomes_are_counted_per_rotator_and_outcome(client: fakeredis.FakeRedis) -> None:
    for outcome in ("done", "done", "failed"):
        metrics.record_outcome(client, "random-password", outcome)
    metrics.record_outcome(client, "salesforce-oauth", "needs_attention")
    samples = scrape(client)
    name = "scaivault_rotator_rotations_total"
    assert samples[(name, (("outcome", "done"), ("rotator", "random-password")))] == 2
    assert samples[(name, (("outcome", "failed"), ("rotator", "random-password")))] == 1
    assert samples[(name, (("outcome", "needs_attention"), ("rotator", "salesforce-oauth")))] == 1


def test_step_durations_form_a_cumulative_histogram(client: fakeredis.FakeRedis) -> None:
    for seconds in (0.01, 0.3, 7.0, 1000.0):
        metrics.observe_step(client, "random-password", "mint", seconds)
    samples = scrape(client)
    labels = (("rotator", "random-password"), ("step", "mint"))
    name = "scaivault_rotator_step_duration_seconds"

    def bucket(le: str) -> float:
        return samples[(name + "_bucket", (("le", le), *labels))]

    assert bucket("0.05") == 1
    assert bucket("0.5") == 2
    assert bucket("10.0") == 3
    assert bucket("300.0") == 3
    assert bucket("+Inf") == 4
    assert samples[(name + "_count", labels)] == 4
    assert samples[(name + "_sum", labels)] == pytest.approx(1007.31)


def test_due_queue_gauges(client: fakeredis.FakeRedis) -> None:
    samples = scrape(client)
    assert samples[("scaivault_rotator_pending_finalizations", ())] == 0
    assert samples[("scaivault_rotator_oldest_overdue_finalization_seconds", ())] == 0
    now_ms = time.time() * 1000
    client.zadd(keys.DUE, {"rot_late": now_ms - 120_000, "rot_future": now_ms + 3_600_000})
    samples = scrape(client)
    assert samples[("scaivault_rotator_pending_finalizations", ())] == 2
    overdue = samples[("scaivault_rotator_oldest_overdue_finalization_seconds", ())]
    assert 119 <= overdue <= 180


def test_credentials_left_valid_count_until_acknowledged(client: fakeredis.FakeRedis) -> None:
    name = ("scaivault_rotator_credentials_left_valid", ())
    assert scrape(client)[name] == 0
    strays = Strays(client)
    strays.add("apps/a", "rot_a", "the rollback could not revoke the new credential")
    strays.add("apps/b", "rot_b", "revoking the unused credential failed")
    assert scrape(client)[name] == 2
    strays.acknowledge("apps/a")
    assert scrape(client)[name] == 1


def test_nothing_overdue_when_all_entries_are_in_the_future(client: fakeredis.FakeRedis) -> None:
    client.zadd(keys.DUE, {"rot": time.time() * 1000 + 60_000})
    assert scrape(client)[("scaivault_rotator_oldest_overdue_finalization_seconds", ())] == 0


def test_redis_down_is_a_gauge_not_a_crash(log_stream: io.StringIO) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    dead = fakeredis.FakeRedis(server=server)
    metrics.record_outcome(dead, "random-password", "done")  # logged, not raised
    metrics.observe_step(dead, "random-password", "mint", 1.0)
    assert scrape(dead) == {("scaivault_rotator_metrics_redis_up", ()): 0}
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    failed = [e for e in lines if e["event"] in {"metrics_write_failed", "metrics_read_failed"}]
    assert [e["event"] for e in failed] == ["metrics_write_failed"] * 2 + ["metrics_read_failed"]
    assert all(e["reason"] == "ConnectionError" and "error" not in e for e in failed)


def test_decoded_clients_work_too() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    metrics.record_outcome(client, "r", "done")
    metrics.observe_step(client, "r", "verify", 2.0)
    samples = scrape(client)
    assert samples[("scaivault_rotator_rotations_total", (("outcome", "done"), ("rotator", "r")))]
    assert samples[("scaivault_rotator_metrics_redis_up", ())] == 1


def test_server_serves_the_collector_and_port_zero_is_off(
    client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTATOR_METRICS_PORT", raising=False)
    assert metrics.start_metrics_server(Settings.load(ROTATOR_METRICS_PORT=0), client) is None
    port = free_port()
    metrics.record_outcome(client, "random-password", "done")
    started: Any = metrics.start_metrics_server(
        Settings.load(ROTATOR_METRICS_PORT=port), client, addr="127.0.0.1"
    )
    server, thread = started
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert (
            'scaivault_rotator_rotations_total{outcome="done",rotator="random-password"} 1.0'
            in body
        )
    finally:
        server.shutdown()
        thread.join(timeout=5)
