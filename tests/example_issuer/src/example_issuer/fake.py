"""A fake key service (a real HTTP server on 127.0.0.1) and the conformance kit's adapter for
it: what this plugin's tests and a local stack run the rotator against. A real plugin keeps
such a fake with its tests; it ships here so the guide's walk-through can start one::

    python -m example_issuer.fake --port 8300 --admin-token dev-keys-admin

The API (``Authorization: Bearer <token>``; the admin token for ``/v1/keys``, a key's secret
for ``/v1/whoami``)::

    POST   /v1/keys  (Idempotency-Key: K)  -> 201 {"id", "secret"}; 200 and the same key for K
    GET    /v1/keys/{id}                   -> 200 {"id", "idempotency_key"} | 404
    DELETE /v1/keys/{id}                   -> 204 | 404
    GET    /v1/whoami                      -> 200 {"key_id"} | 401

A new key is refused for ``propagation_delay`` seconds, as a distributed service may. Nothing
is logged; secrets live in memory only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from rotators.testing import FaultProxy, Scenario


@dataclass
class Key:
    id: str
    secret: str
    idempotency_key: str
    created: float


class FakeKeyService:
    """The service's state and its HTTP server. :meth:`start`, then use :attr:`url`."""

    def __init__(self, admin_token: str | None = None, propagation_delay: float = 0.0) -> None:
        self.admin_token = admin_token or "adm_" + secrets.token_urlsafe(18)
        self.propagation_delay = propagation_delay
        self.keys: dict[str, Key] = {}
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # --- for tests --------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeKeyService:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def create_key(self, idempotency_key: str | None = None) -> Key:
        """Issue a key (as the admin API does), at once accepted."""
        with self.lock:
            return self._create(idempotency_key or secrets.token_hex(8), propagated=True)

    def accepts(self, key_id: str, secret: str) -> bool:
        """Does the service accept this key right now?"""
        with self.lock:
            key = self.keys.get(key_id)
            return key is not None and key.secret == secret and self._propagated(key)

    def key_ids(self) -> frozenset[str]:
        with self.lock:
            return frozenset(self.keys)

    # --- the service ------------------------------------------------------------------------

    def _create(self, idempotency_key: str, propagated: bool = False) -> Key:
        for key in self.keys.values():
            if key.idempotency_key == idempotency_key:
                return key
        created = 0.0 if propagated else time.monotonic()
        key = Key("key_" + secrets.token_hex(6), "sk_" + secrets.token_urlsafe(24),
                  idempotency_key, created)  # fmt: skip
        self.keys[key.id] = key
        return key

    def _propagated(self, key: Key) -> bool:
        return time.monotonic() - key.created >= self.propagation_delay

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        """The status and JSON body for one request (``headers`` named in lower case)."""
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self.lock:
            if path == "/v1/whoami" and method == "GET":
                found = [k for k in self.keys.values() if k.secret == token]
                if not found or not self._propagated(found[0]):
                    return 401, {"error": "unauthorized"}
                return 200, {"key_id": found[0].id}
            if not secrets.compare_digest(token, self.admin_token):
                return 401, {"error": "unauthorized"}
            return self._admin(method, path, headers)

    def _admin(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        if path == "/v1/keys" and method == "POST":
            idempotency_key = headers.get("idempotency-key", "")
            if not idempotency_key:
                return 400, {"error": "Idempotency-Key is required"}
            replay = any(k.idempotency_key == idempotency_key for k in self.keys.values())
            key = self._create(idempotency_key)
            return (200 if replay else 201), {"id": key.id, "secret": key.secret}
        if path.startswith("/v1/keys/"):
            key_id = unquote(path.removeprefix("/v1/keys/"))
            if key_id not in self.keys:
                return 404, {"error": "no such key"}
            if method == "DELETE":
                del self.keys[key_id]
                return 204, None
            if method == "GET":
                key = self.keys[key_id]
                return 200, {"id": key.id, "idempotency_key": key.idempotency_key}
        return 404, {"error": "not found"}


def _handler(service: FakeKeyService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body = service.answer(self.command, self.path.split("?")[0], headers)
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class KitTarget:
    """The conformance kit's target adapter: a fresh key per scenario, reached through a
    :class:`~rotators.testing.FaultProxy` so the kit can inject network faults; ``snapshot``
    is the set of key ids (a read-only step must not change it)."""

    ADMIN_PATH = "apps/billing/key-service-admin"

    def __init__(self, service: FakeKeyService, timeout: float = 2.0) -> None:
        self.service = service
        self.timeout = timeout
        self.proxy = FaultProxy(("127.0.0.1", service.port))

    def setup(self) -> Scenario:
        key = self.service.create_key()
        return Scenario(
            data={"key_id": key.id, "api_key": key.secret, "owner": "billing"},
            options={
                "base_url": self.proxy.url,
                "admin_secret_path": self.ADMIN_PATH,
                "timeout": self.timeout,
                "propagation_timeout": 5.0,
            },
            path="apps/billing/api-key",
            vault_secrets={self.ADMIN_PATH: {"token": self.service.admin_token}},
            public_fields=frozenset({"key_id", "owner"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        return self.service.accepts(str(data.get("key_id")), str(data.get("api_key")))

    def snapshot(self) -> object:
        return self.service.key_ids()

    def fault(self, kind: str) -> AbstractContextManager[None]:
        return self.proxy.fault(kind)

    def close(self) -> None:
        self.proxy.close()


def main(argv: list[str] | None = None) -> None:
    """Run the fake until interrupted; print one JSON line with its URL when it listens."""
    parser = argparse.ArgumentParser(prog="python -m example_issuer.fake")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--propagation-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    service = FakeKeyService(args.admin_token, args.propagation_delay).start(args.port)
    print(json.dumps({"event": "fake_keys_ready", "url": service.url}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        service.close()


if __name__ == "__main__":
    main()
