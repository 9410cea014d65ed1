"""Alerts POSTed to a real HTTP server on 127.0.0.1; failures are logged, never raised."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrator.engine.alerts import Alerter
from orchestrator.local.processes import free_port
from orchestrator.settings import Settings

TOKEN_IN_URL = "T0KEN-in-webhook-url-5521"


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 204
    delay: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hooks/{TOKEN_IN_URL}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.requests.append(
                {"content_type": self.headers["Content-Type"], "body": self.rfile.read(length)}
            )
            time.sleep(state.delay)
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def send(alerter: Alerter) -> None:
    alerter.send(
        path="apps/db",
        rotation_id="rot_42",
        state="needs_attention",
        reason="ScaiVault answered access_denied on store",
        rotator="random-password",
        step="store",
    )


def test_posts_json_with_the_facts(receiver: Receiver, log_stream: io.StringIO) -> None:
    send(Alerter(receiver.url))
    (request,) = receiver.requests
    assert request["content_type"] == "application/json"
    body = json.loads(request["body"])
    assert body["path"] == "apps/db"
    assert body["rotation_id"] == "rot_42"
    assert body["state"] == "needs_attention"
    assert body["reason"] == "ScaiVault answered access_denied on store"
    assert body["rotator"] == "random-password" and body["step"] == "store"
    assert body["source"] == "scaivault-rotator"
    assert "rot_42" in body["text"]
    (line,) = [e for e in events(log_stream) if e["event"].startswith("alert_")]
    assert line["event"] == "alert_sent" and line["status"] == 204
    assert TOKEN_IN_URL not in log_stream.getvalue()


def test_error_status_is_logged_not_raised(receiver: Receiver, log_stream: io.StringIO) -> None:
    receiver.status = 500
    send(Alerter(receiver.url))
    assert len(receiver.requests) == 1
    (line,) = [e for e in events(log_stream) if e["event"] == "alert_failed"]
    assert line["status"] == 500 and line["rotation_id"] == "rot_42"
    assert line["host"] == "127.0.0.1"
    assert TOKEN_IN_URL not in log_stream.getvalue()


def test_unreachable_endpoint_is_logged_not_raised(log_stream: io.StringIO) -> None:
    send(Alerter(f"http://127.0.0.1:{free_port()}/hooks/{TOKEN_IN_URL}", timeout=2))
    (line,) = [e for e in events(log_stream) if e["event"] == "alert_failed"]
    assert line["reason"] == "ConnectError"
    assert TOKEN_IN_URL not in log_stream.getvalue()


def test_slow_endpoint_hits_the_timeout(receiver: Receiver, log_stream: io.StringIO) -> None:
    receiver.delay = 1.5
    send(Alerter(receiver.url, timeout=0.2))
    (line,) = [e for e in events(log_stream) if e["event"] == "alert_failed"]
    assert line["reason"] == "ReadTimeout"


def test_no_url_is_a_no_op(log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROTATOR_ALERT_WEBHOOK_URL", raising=False)
    alerter = Alerter(Settings.load().rotator_alert_webhook_url)
    assert alerter.url is None
    send(alerter)
    assert not [e for e in events(log_stream) if e["event"].startswith("alert_")]


def test_repr_hides_the_url_path(receiver: Receiver) -> None:
    assert TOKEN_IN_URL not in repr(Alerter(receiver.url))
