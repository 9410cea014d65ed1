"""The worker and beat as the ecosystem's tools see them: JSON-only logs a log shipper can read
from the first line to the last, task events for Flower and ``celery events``, and a metrics
port that is either served or a reason to stop."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from orchestrator.local.processes import ChildProcess, cli_argv, free_port
from tests.fixtures.logs import json_lines
from tests.fixtures.plugins import write_dist_info
from tests.fixtures.worker import ENGINE_ROTATORS, EngineStack

pytestmark = pytest.mark.integration


def test_worker_and_beat_write_nothing_but_json_lines(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    stack.env["ROTATOR_METRICS_PORT"] = str(free_port())
    stack.emulator.put_secret("apps/json/db", {"password": "json-logs-initial-0"})
    worker, beat = stack.worker(), stack.beat()
    stack.publish(path="apps/json/db", event_id="evt_json_1")
    stack.wait_run("apps/json/db", "done")
    for child in (worker, beat):
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)  # a warm shutdown prints its notices too
        assert child.proc.wait(timeout=120) == 0, child.log_tail(20)

    worker_events = {entry["event"] for entry in json_lines(worker.log_path)}
    assert {"metrics_server_started", "worker_configured", "rotation_done"} <= worker_events
    assert any(event.endswith(" ready.") for event in worker_events)
    assert any("Warm shutdown" in event for event in worker_events)
    beat_events = {entry["event"] for entry in json_lines(beat.log_path)}
    assert "beat: Starting..." in beat_events


def test_a_plugin_warning_comes_as_json_from_the_first_line(engine_stack: EngineStack) -> None:
    stack = engine_stack
    unverified = {"test-unverified": "tests.rotators.unverified:UnverifiedRotator"}
    write_dist_info(stack.tmp_path / "plugins", {**ENGINE_ROTATORS, **unverified})
    stack.routing('[[rules]]\nmatch = "apps/**"\nrotator = "test-unverified"\n')
    worker = stack.worker()
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=120) == 0, worker.log_tail(20)
    entries = json_lines(worker.log_path)
    assert entries[0]["event"] == "plugin_warning", entries[0]
    assert entries[0]["rotator"] == "test-unverified"


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_bad_setting_is_refused_in_one_json_line(engine_stack: EngineStack, role: str) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    stack.env["ROTATOR_VISIBILITY_TIMEOUT"] = "garbage"
    log_path = stack.tmp_path / f"{role}-refused.log"
    child = ChildProcess(role, cli_argv(role), log_path, env=stack.env).start()
    stack.children.append(child)
    assert child.proc is not None
    assert child.proc.wait(timeout=120) == 2, child.log_tail(20)
    [refusal] = json_lines(log_path)
    assert refusal["event"] == "startup_refused" and refusal["level"] == "error"
    assert any("ROTATOR_VISIBILITY_TIMEOUT" in problem for problem in refusal["problems"])
    assert "garbage" not in log_path.read_text()  # the values given are not echoed


class EventCapture:
    """Celery task events from the broker's event exchange, as Flower receives them."""

    def __init__(self, redis_url: str) -> None:
        self.app = Celery("event-capture", broker=redis_url, set_as_current=False)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.events.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def wait_for(self, kind: str, task: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first ``kind`` event (e.g. ``task-succeeded``) of a ``task`` message."""
        names: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if "name" in event:
                    names[event["uuid"]] = event["name"]
                if event["type"] == kind and names.get(event.get("uuid", "")) == task:
                    return event
            time.sleep(0.1)
        seen = sorted({e["type"] for e in self.events})
        raise AssertionError(f"no {kind} of {task} within {timeout}s; saw {seen}")


@pytest.fixture
def event_capture(engine_stack: EngineStack) -> Iterator[EventCapture]:
    capture = EventCapture(engine_stack.redis_url)
    capture.thread.start()
    assert capture.ready.wait(30)
    yield capture
    capture.receiver.should_stop = True
    capture.thread.join(timeout=10)


def test_task_events_are_on_so_flower_sees_the_work(
    engine_stack: EngineStack, event_capture: EventCapture
) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    stack.emulator.put_secret("apps/events/db", {"password": "events-initial-0"})
    stack.worker()
    stack.publish(path="apps/events/db", event_id="evt_events_1")
    received = event_capture.wait_for("task-received", "scaivault.rotate")
    event_capture.wait_for("task-succeeded", "scaivault.rotate")
    assert "apps/events/db" in received["kwargs"]  # ids and paths only, never secret data


def test_a_worker_whose_metrics_port_is_taken_stops_saying_why(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule())
    with socket.socket() as holder:  # the first worker on this host
        holder.bind(("0.0.0.0", 0))  # the worker binds every address too
        holder.listen()
        stack.env["ROTATOR_METRICS_PORT"] = str(holder.getsockname()[1])
        second = stack.worker("w2", wait=False)
        deadline = time.monotonic() + 90
        while second.alive and " ready." not in second.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.proc is not None
        assert second.proc.wait(timeout=30) == 2, second.log_tail()
    [refusal] = [e for e in json_lines(second.log_path) if e["event"] == "startup_refused"]
    assert "ROTATOR_METRICS_PORT" in refusal["problems"][0]
    assert "ready." not in second.log_tail(1000)
