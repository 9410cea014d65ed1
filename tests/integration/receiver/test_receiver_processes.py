"""``scaivault-rotator serve`` and ``emulator`` as real processes: the receiver's metrics count
every uvicorn worker process, and both write nothing but JSON log lines."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.local.processes import ChildProcess, cli_argv, free_port
from orchestrator.receiver.signing import sign
from tests.fixtures.emulator import EmulatorProcess
from tests.fixtures.logs import json_lines
from tests.fixtures.receiver import WEBHOOK_SECRET, event_body

pytestmark = pytest.mark.integration


class ReceiverProcess:
    """``scaivault-rotator serve --workers N`` in a process group of its own."""

    def __init__(self, tmp_path: Path, redis_url: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "SCAIVAULT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ROTATOR_LOG_FORMAT": "json",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        argv = cli_argv("serve", "--port", str(self.port), "--workers", str(workers))
        self.child = ChildProcess("receiver", argv, tmp_path / "receiver.log", env=env)

    def start(self) -> ReceiverProcess:
        self.child.start().wait_http(self.url + "/readyz", timeout=60)
        return self

    def post(self, event_id: str) -> httpx.Response:
        body = event_body(event_id, path=f"apps/{event_id}/db")
        headers = {
            "content-type": "application/json",
            "x-scaivault-signature": sign(body, WEBHOOK_SECRET),
        }
        return httpx.post(self.url + "/scaivault/events", content=body, headers=headers, timeout=30)

    def queued(self) -> float:
        """``scaivault_receiver_events_total{type="rotation.due", outcome="queued"}`` as one
        scrape on a new connection reports it."""
        text = httpx.get(self.url + "/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "scaivault_receiver_events_total" and labels == {
                    "type": "rotation.due",
                    "outcome": "queued",
                }:
                    return sample.value
        raise AssertionError("no queued series in the scrape")


@pytest.fixture
def receiver_process(tmp_path: Path, redis_url: str) -> Iterator[Callable[[int], ReceiverProcess]]:
    started: list[ReceiverProcess] = []

    def start(workers: int) -> ReceiverProcess:
        process = ReceiverProcess(tmp_path, redis_url, workers).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.child.stop()


def test_metrics_count_the_events_of_every_worker_process(
    receiver_process: Callable[[int], ReceiverProcess],
) -> None:
    receiver = receiver_process(2)
    assert receiver.queued() == 0  # the series exists before the first event
    for number in range(10):
        assert receiver.post(f"evt_multi_{number}").status_code == 202
    scrapes = [receiver.queued() for _ in range(12)]  # each on a new connection
    assert scrapes == [10.0] * 12


def test_receiver_and_emulator_write_nothing_but_json_lines(
    receiver_process: Callable[[int], ReceiverProcess],
    emulator_factory: Callable[..., EmulatorProcess],
) -> None:
    receiver = receiver_process(2)
    assert receiver.post("evt_json_receiver").status_code == 202
    assert receiver.post("evt_json_receiver").status_code == 200
    emulator = emulator_factory()
    httpx.get(emulator.url + "/healthz", timeout=10).raise_for_status()
    for child in (receiver.child, emulator.child):
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
        child.proc.wait(timeout=60)

    receiver_events = {entry["event"] for entry in json_lines(receiver.child.log_path)}
    assert {"receiver_started", "events_accepted"} <= receiver_events
    assert json_lines(emulator.child.log_path)
