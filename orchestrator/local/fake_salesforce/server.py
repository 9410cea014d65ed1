"""The fake Salesforce HTTP(S) server: Salesforce's wire format over the :class:`Org` state.

Implements the OAuth token and revoke endpoints, ``limits``, ``query``, and the Connect REST
``apps/oauth`` resources (usage, credentials by app and consumer, staged credentials) with
Salesforce-shaped error bodies and the ``Sforce-Limit-Info`` header; which handler answers a
path is decided in :mod:`orchestrator.local.fake_salesforce.routes`. Test control lives under
``/_fake/`` (create apps and consumers, inject faults, expire sessions, move the clock).
With ``tls_dir`` it serves HTTPS with a certificate from a generated CA written to
``tls_dir/ca.pem``, so clients use their real TLS code path with ``verify=ca.pem``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.local.fake_salesforce.errors import FAULT_KINDS, ApiError
from orchestrator.local.fake_salesforce.org import ADMIN_PERMISSIONS, Org
from orchestrator.local.fake_salesforce.records import Token
from orchestrator.local.fake_salesforce.routes import route

Reply = tuple[int, Any]


class FakeSalesforceServer(ThreadingHTTPServer):
    """A threading HTTP server holding one :class:`Org`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], org: Org, scheme: str) -> None:
        super().__init__(address, Handler)
        self.org = org
        self.scheme = scheme

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"


class Handler(BaseHTTPRequestHandler):
    """Routes one request; every answer is JSON (or empty for 204)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, delayed ACKs add ~40 ms each.
    disable_nagle_algorithm = True
    server: FakeSalesforceServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is available at ``GET /_fake/requests``."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing ----------------------------------------------------------------------

    @property
    def org(self) -> Org:
        return self.server.org

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.query = parse_qs(parts.query)
        self.raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hang = 0.0
        try:
            name, params = route(method, path)
            if not name.startswith("fake_"):
                fault = self.org.take_fault(method, path)
                if fault is not None and fault.kind in FAULT_KINDS:
                    status, code, message = FAULT_KINDS[fault.kind]
                    raise ApiError(status, code, message, oauth=name in {"token", "revoke"})
                hang = fault.seconds if fault is not None else 0.0
            handler: Callable[..., Reply] = getattr(self, "h_" + name)
            status, body = handler(**params)
        except ApiError as err:
            status, body = err.status, err.body()
        except (ValueError, KeyError, TypeError):
            status, body = 400, [{"message": "JSON_PARSER_ERROR", "errorCode": "JSON_PARSER_ERROR"}]
        if not path.startswith("/_fake/"):
            self.org.record(method, path, status)
        if hang:
            time.sleep(hang)
        self._send(status, body, limit_info=path.startswith("/services/data/"))

    def _send(self, status: int, body: Any, limit_info: bool) -> None:
        payload = b"" if status == 204 or body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            if limit_info:
                usage = f"api-usage={self.org.api_used}/{self.org.api_max}"
                self.send_header("Sforce-Limit-Info", usage)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True  # the client gave up (e.g. killed during a "hang")

    def _json(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body.strip() else {}

    def _form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.raw_body.decode()).items()}

    def _token(self) -> Token:
        header = self.headers.get("Authorization", "")
        token = self.org.authenticate(header.removeprefix("Bearer ").strip() or None)
        self.org.count_api_call()
        return token

    def _url(self) -> str:
        return self._base() + urlsplit(self.path).path.rstrip("/")

    def _base(self) -> str:
        """The base URL the client used (its Host header), so ``--host 0.0.0.0`` works too."""
        host = self.headers.get("Host")
        return f"{self.server.scheme}://{host}" if host else self.server.base_url

    # --- OAuth ----------------------------------------------------------------------------

    def h_token(self) -> Reply:
        form = self._form()
        key, secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        token = self.org.issue_token(form.get("grant_type"), key, secret)
        base, issued = self._base(), str(int(time.time() * 1000))
        return 200, {
            "access_token": token,
            "signature": base64.b64encode(os.urandom(32)).decode(),
            "scope": "api",
            "instance_url": base,
            "id": f"{base}/id/{self.org.org_id}/005000000000001AAA",
            "token_type": "Bearer",
            "issued_at": issued,
        }

    def h_revoke(self) -> Reply:
        self.org.revoke_token(self._form().get("token"))
        return 200, None

    # --- REST -------------------------------------------------------------------------------

    def h_limits(self) -> Reply:
        self._token()
        max_, used = self.org.api_max, self.org.api_used
        return 200, {"DailyApiRequests": {"Max": max_, "Remaining": max(max_ - used, 0)}}

    def h_query(self) -> Reply:
        self._token()
        soql = (self.query.get("q") or [""])[0]
        if not soql.upper().startswith("SELECT "):
            raise ApiError(400, "MALFORMED_QUERY", "unexpected token")
        records = []
        if "FROM ORGANIZATION" in soql.upper():
            url = f"/services/data/v65.0/sobjects/Organization/{self.org.org_id}"
            records.append(
                {"attributes": {"type": "Organization", "url": url}, "Id": self.org.org_id}
            )
        return 200, {"totalSize": len(records), "done": True, "records": records}

    def h_usage(self) -> Reply:
        self._token()
        return 200, {"apps": self.org.usage(), "currentPageUrl": self._url(), "nextPageUrl": None}

    def h_consumers(self, app: str) -> Reply:
        token, url = self._token(), self._url()
        consumers = [
            {
                "id": c.id,
                "key": c.primary.key,
                "name": c.name,
                "url": f"{url}/{c.id}",
                "stagedCredentialsUrl": f"{url}/{c.id}/staged",
            }
            for c in self.org.consumers(token, app)
        ]
        return 200, {"consumers": consumers, "currentPageUrl": url, "nextPageUrl": None}

    def h_consumer(self, app: str, cons: str) -> Reply:
        consumer = self.org.consumer(self._token(), app, cons)
        part = (self.query.get("part") or ["key"])[0]
        if part not in {"key", "secret", "keyandsecret"}:
            raise ApiError(400, "INVALID_INPUT", "part must be key, secret or keyandsecret")
        body: dict[str, Any] = {"id": consumer.id, "url": self._url()}
        if part in {"key", "keyandsecret"}:
            body["key"] = consumer.primary.key
        if part in {"secret", "keyandsecret"}:
            body["secret"] = consumer.primary.secret
        return 200, body

    def _collection(self, staged: list[Any]) -> dict[str, Any]:
        url = self._url()
        return {"stagedCredentials": [self.org.staged_view(s, url) for s in staged], "url": url}

    def h_staged_list(self, app: str, cons: str) -> Reply:
        return 200, self._collection(self.org.staged_list(self._token(), app, cons))

    def h_stage(self, app: str, cons: str) -> Reply:
        self._json()
        return 201, self._collection([self.org.stage(self._token(), app, cons)])

    def h_staged_get(self, app: str, cons: str, sid: str) -> Reply:
        staged = self.org.staged_get(self._token(), app, cons, sid)
        return 200, self.org.staged_view(staged, self._url())

    def h_staged_patch(self, app: str, cons: str, sid: str) -> Reply:
        command = self._json().get("command")
        staged = self.org.staged_command(self._token(), app, cons, sid, command)
        return 200, self.org.staged_view(staged, self._url().rsplit("/", 1)[0])

    def h_staged_delete(self, app: str, cons: str, sid: str) -> Reply:
        self.org.staged_delete(self._token(), app, cons, sid)
        return 204, None

    # --- /_fake control -------------------------------------------------------------------

    def h_fake_health(self) -> Reply:
        return 200, {"ok": True}

    def h_fake_state(self) -> Reply:
        return 200, self.org.snapshot()

    def h_fake_requests(self) -> Reply:
        with self.org.lock:
            return 200, list(self.org.requests)

    def h_fake_app(self) -> Reply:
        body = self._json()
        app = self.org.create_app(
            body["developer_name"], body.get("label"), body.get("kind", "eca")
        )
        return 201, {"id": app.id, "developer_name": app.developer_name, "kind": app.kind}

    def h_fake_consumer(self, app: str) -> Reply:
        body = self._json()
        consumer = self.org.create_consumer(
            app, body.get("name", "consumer"), body.get("permissions")
        )
        return 201, {
            "app_id": app,
            "id": consumer.id,
            "client_id": consumer.primary.key,
            "client_secret": consumer.primary.secret,
        }

    def h_fake_admin(self) -> Reply:
        """The rotator's admin identity in one call: an ECA whose consumer has the permissions."""
        app = self.org.create_app(self._json().get("developer_name", "RotatorAdmin"))
        consumer = self.org.create_consumer(app.id, "admin", list(ADMIN_PERMISSIONS))
        return 201, {
            "app_id": app.id,
            "id": consumer.id,
            "client_id": consumer.primary.key,
            "client_secret": consumer.primary.secret,
        }

    def h_fake_fault(self) -> Reply:
        body = self._json()
        self.org.add_fault(
            body["match"], body["kind"], int(body.get("count", 1)), float(body.get("seconds", 0))
        )
        return 201, {"ok": True}

    def h_fake_clear_faults(self) -> Reply:
        self.org.clear_faults()
        return 204, None

    def h_fake_config(self) -> Reply:
        return 200, self.org.configure(self._json())

    def h_fake_expire(self) -> Reply:
        self.org.expire_sessions()
        return 204, None

    def h_fake_clock(self) -> Reply:
        self.org.advance_clock(float(self._json()["advance"]))
        return 200, {"ok": True}


def tls_context(tls_dir: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context from ``tls_dir`` (a fresh CA on first use) and the CA's path."""
    try:
        import trustme
    except ImportError:
        sys.exit(
            "fake Salesforce: TLS needs the 'local' extra (trustme): "
            "pip install 'scaivault-rotator[local]'"
        )

    ca_path, server_path = tls_dir / "ca.pem", tls_dir / "server.pem"
    if not (ca_path.exists() and server_path.exists()):
        tls_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="fake-salesforce test CA")
        ca.issue_cert("127.0.0.1", "localhost", "::1").private_key_and_cert_chain_pem.write_to_path(
            str(server_path)
        )
        ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(server_path))
    return context, ca_path


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    tls_dir: Path | None = None,
    propagation_delay: float = 0.0,
    state_file: Path | None = None,
) -> tuple[FakeSalesforceServer, Path | None]:
    """Bind the fake (``port`` 0 picks a free one); return the server and the CA path if TLS."""
    org = Org(propagation_delay=propagation_delay, state_file=state_file)
    server = FakeSalesforceServer((host, port), org, "https" if tls_dir else "http")
    ca_path = None
    if tls_dir is not None:
        context, ca_path = tls_context(tls_dir)
        # Handshake lazily in the handler thread, so one slow client cannot stall accept().
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server, ca_path


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    tls_dir: Path | None = None,
    propagation_delay: float = 0.0,
    state_file: Path | None = None,
) -> None:
    """Run until interrupted; print one JSON line with ``url`` and ``ca_bundle`` when ready."""
    server, ca_path = make_server(host, port, tls_dir, propagation_delay, state_file)
    ready = {
        "event": "fake_salesforce_ready",
        "url": server.base_url,
        "ca_bundle": str(ca_path) if ca_path else None,
    }
    print(json.dumps(ready), file=sys.stdout, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
