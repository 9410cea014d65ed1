"""The kit's FaultProxy in front of a real HTTP server: it forwards, and inside ``fault`` it
refuses connections, holds them unanswered, or answers 503, cutting pooled connections too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from rotators.testing import FAULTS, FaultProxy

pytestmark = pytest.mark.integration


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FaultProxy(("127.0.0.1", server.server_address[1])) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def test_it_forwards_outside_a_fault_and_fails_inside(proxy: FaultProxy) -> None:
    with httpx.Client(base_url=proxy.url, timeout=2.0) as client:
        assert client.get("/").text == "hello"  # a pooled keep-alive connection now
        with proxy.fault("refused"), pytest.raises(httpx.ConnectError):
            client.get("/")
        assert client.get("/").text == "hello", "the same port listens again"
        with proxy.fault("timeout"), pytest.raises(httpx.ReadTimeout):
            client.get("/", timeout=0.5)
        with proxy.fault("5xx"):
            assert client.get("/").status_code == 503
        assert client.get("/").text == "hello"


def test_it_knows_only_the_kits_faults(proxy: FaultProxy) -> None:
    assert FAULTS == ("refused", "timeout", "5xx")
    with pytest.raises(ValueError, match="unknown fault"), proxy.fault("slow"):
        pass
