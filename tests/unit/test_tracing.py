"""Tracing is off, and OpenTelemetry not even imported, unless ``OTEL_*`` variables ask for it;
when on, a task message carries the W3C trace context in its headers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from orchestrator.settings import TracingSettings
from orchestrator.state.messages import Task, message_kwargs, task_message

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# redis-py imports parts of OpenTelemetry's API itself when it is installed: what matters is
# that our calls load nothing more (no SDK tracer, exporter or instrumentation).
OFF_PROBE = """
import sys
from orchestrator import tracing
from orchestrator.receiver.app import create_app
from orchestrator.settings import Settings
app = create_app(Settings.load(SCAIVAULT_WEBHOOK_SECRET="whsec_unit_test_only"))
before = {m for m in sys.modules if m.startswith("opentelemetry")}
assert tracing.configure("receiver") is False
assert tracing.instrument_asgi(app) is app and tracing.carrier() == {}
with tracing.span("rotation.mint", path="a/b"):
    pass
tracing.instrument_celery()
loaded = {m for m in sys.modules if m.startswith("opentelemetry")}
print(sorted(loaded - before), sorted(m for m in loaded if m.startswith("opentelemetry.instr")))
"""


def test_without_otel_variables_nothing_of_opentelemetry_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, False),
    ],
)
def test_tracing_is_wanted_only_when_an_exporter_is_configured(
    env: dict[str, str], wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert TracingSettings().wanted() is wanted


def test_a_task_message_carries_the_trace_context_in_its_headers() -> None:
    kwargs = {"path": "apps/a/db", "event_id": "evt_1"}
    _, plain = task_message(Task.ROTATE, kwargs, task_id="t1")
    _, traced = task_message(Task.ROTATE, kwargs, task_id="t1", trace={"traceparent": TRACEPARENT})
    envelope = json.loads(traced)
    assert envelope["headers"]["traceparent"] == TRACEPARENT
    assert message_kwargs(traced) == message_kwargs(plain) == kwargs
    assert base64.b64decode(envelope["body"]) == base64.b64decode(json.loads(plain)["body"])
    assert "traceparent" not in json.loads(plain)["headers"]


FAILING_CALL_PROBE = """
from opentelemetry import trace
from orchestrator import tracing

class Rotator:
    name = "careless"
    def verify(self, ctx, new):
        raise ValueError("login refused for " + new)

assert tracing.configure("worker") is True
try:
    tracing.traced(Rotator()).verify(None, "NEWSECRET-do-not-trace")
except ValueError:
    pass
trace.get_tracer_provider().force_flush()
"""


def test_a_failing_rotator_call_is_a_failed_span_without_the_exception_text() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    done = subprocess.run(
        [sys.executable, "-c", FAILING_CALL_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout[done.stdout.index("{") :])  # after the log line
    assert exported["name"] == "rotator.verify"
    assert exported["attributes"] == {"rotator": "careless"}
    assert exported["status"] == {"status_code": "ERROR", "description": "ValueError"}
    assert exported["events"] == []  # no exception event with its message
    assert "NEWSECRET" not in done.stdout + done.stderr
