"""Network faults for a test target: the kinds the kit injects, and a proxy that makes them.

A target adapter with ``fault(kind)`` lets :meth:`Conformance.check_network_faults` see how a
rotator behaves when its target refuses connections, never answers, or answers 5xx. Put a
:class:`FaultProxy` in front of the test target (point the scenario's options at
:attr:`FaultProxy.port`) and ``fault`` is one line::

    def fault(self, kind):
        return self.proxy.fault(kind)

The proxy forwards bytes, so it works for TLS targets too, except ``5xx``: it answers that
itself in plain HTTP, so a TLS target's adapter makes its own fake answer 503 instead.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

#: The faults the kit injects: connections refused, connections that never answer (the
#: rotator's own timeout must end the call), and HTTP 503 answers.
FAULTS = ("refused", "timeout", "5xx")

#: What each fault means, for the kit's messages.
FAULT_MEANING = {
    "refused": "refuses connections",
    "timeout": "never answers",
    "5xx": "answers 503",
}

_BODY = b'{"error": {"code": "service_unavailable", "message": "fault injected by the kit"}}'
_ANSWER_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _BODY
)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port) that can fail on demand.

    Outside :meth:`fault` it forwards every connection. Each fault also cuts the connections
    already open, so a client's pooled connection meets the fault too. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.mode = "pass"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._released = threading.Event()
        self._listener: socket.socket | None = None
        self._listen(0)
        assert self._listener is not None
        self.port: int = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (use ``https://`` yourself for a TLS target)."""
        return f"http://{self.host}:{self.port}"

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        """Inside the block the target fails as ``kind`` says (one of :data:`FAULTS`)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; the kit injects {', '.join(FAULTS)}")
        self._released.clear()
        self.mode = kind
        self._cut()
        if kind == "refused":
            self._unlisten()
        try:
            yield
        finally:
            self.mode = "pass"
            self._released.set()
            self._cut()
            if kind == "refused":
                self._listen(self.port)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self.mode = "closed"
        self._released.set()
        self._unlisten()
        self._cut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _listen(self, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client, self.mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        if mode == "timeout":
            self._released.wait()  # hold it, unanswered, until the fault ends
            self._drop(client)
        elif mode == "5xx":
            self._answer_503(client)
        elif mode == "pass":
            self._forward(client)
        else:
            self._drop(client)

    def _answer_503(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
            client.sendall(_ANSWER_503)
        self._drop(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._drop(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        self._drop(source)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _cut(self) -> None:
        """Close every connection open now (pooled keep-alive connections included)."""
        with self._lock:
            open_now, self._open = self._open, set()
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
