"""``scaivault-rotator serve`` and ``emulator`` as real processes: the receiver's metrics count
every uvicorn worker process, and both write nothing but JSON log lines."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.emulator import EmulatorProcess
from tests.fixtures.logs import json_lines
from tests.fixtures.receiver import ReceiverProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver_process(tmp_path: Path, redis_url: str) -> Iterator[Callable[[int], ReceiverProcess]]:
    started: list[ReceiverProcess] = []

    def start(workers: int) -> ReceiverProcess:
        env = {**os.environ, "REDIS_URL": redis_url, "ROTATOR_LOG_FORMAT": "json"}
        process = ReceiverProcess(tmp_path, env, workers).start()
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
