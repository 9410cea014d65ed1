"""The spec's own examples ("Your First Integration") replayed against the emulator.

Payloads are the spec's curl bodies verbatim; only the host (and the ids the spec shows as
``pol_abc123`` / ``rot_xyz``, and the webhook URL) are swapped for the emulator's real ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request

from orchestrator.local.processes import free_port
from tests.fixtures.emulator import Emulator, WebhookSink

pytestmark = pytest.mark.integration

SPEC_HOST = "https://scaivault.scailabs.ai"

# Step 1: store the secret (curl -d body, verbatim).
STORE_SECRET = """{
"data": {
"client_id": "3MVG9...",
"client_secret": "REDACTED"
},
"secret_type": "json",
"metadata": {
"description": "Salesforce OAuth for all production integrations",
"tags": ["salesforce", "oauth", "production"]
},
"options": {
"max_versions": 10
}
}"""

# Step 2: the policy and its binding.
CREATE_POLICY = """{
"name": "reporting-service-salesforce",
"description": "Reporting service reads Salesforce OAuth",
"rules": [
{
"path_pattern": "integrations/salesforce/oauth",
"permissions": ["read"]
}
]
}"""
BIND_POLICY = """{
"identity_type": "service_account",
"identity_id": "sa:reporting-service"
}"""

# Step 6: the subscription (the URL is the only change: our own receiver instead of acme's).
SUBSCRIPTION = """{
"name": "reporting-service-sf-rotations",
"paths": ["integrations/salesforce/oauth"],
"events": ["secret.rotated", "secret.updated"],
"delivery": {
"type": "webhook",
"url": "https://reporting.acme.example/scaivault/events",
"secret": "whsec_..."
}
}"""

# Step 7: the rotation policy and the assignment.
ROTATION_POLICY = """{
"name": "quarterly",
"interval": "90d",
"grace_period": "48h",
"auto_generate": false
}"""
ASSIGN = '{"secret_path": "integrations/salesforce/oauth"}'

# Step 3: "Or with plain httpx" — the snippet as printed.
HTTPX_READ = """
import os
import httpx
resp = httpx.get(
"https://scaivault.scailabs.ai/v1/secrets/integrations/salesforce/oauth",
headers={"Authorization": f"Bearer {os.environ['SCAIVAULT_TOKEN']}"},
timeout=5.0,
)
resp.raise_for_status()
secret = resp.json()
sf = SalesforceClient(
client_id=secret["data"]["client_id"],
client_secret=secret["data"]["client_secret"],
)
"""

# Step 4: read_secret with the error handling, as printed (it uses a global ``token``).
READ_SECRET = """
import httpx
import time
def read_secret(path: str, max_attempts: int = 3) -> dict:
    for attempt in range(max_attempts):
        try:
            resp = httpx.get(
                f"https://scaivault.scailabs.ai/v1/secrets/{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5.0,
            )
            if resp.status_code == 200:
                return resp.json()["data"]
            err = resp.json().get("error", {})
            code = err.get("code")
            if code in ("rate_limited", "service_unavailable"):
                retry_after = int(resp.headers.get("Retry-After", 1))
                time.sleep(retry_after)
                continue
            if code in ("authentication_required", "token_expired"):
                # Token refresh is the caller's job
                raise PermissionError(f"ScaiVault auth failed: {err}")
            if code == "access_denied":
                raise PermissionError(f"ScaiVault access denied: {err}")
            raise RuntimeError(f"ScaiVault error {resp.status_code}: {err}")
        except httpx.RequestError:
            if attempt == max_attempts - 1:
                raise
            time.sleep(2 ** attempt)
    raise RuntimeError("max retries exceeded")
"""


def curl(emulator: Emulator, method: str, path: str, body: str) -> httpx.Response:
    """What the spec's ``curl -X METHOD ... -H Content-Type: application/json -d BODY`` sends."""
    return httpx.request(
        method,
        f"{emulator.url}{path}",
        headers={"Authorization": f"Bearer {emulator.admin_token}",
                 "Content-Type": "application/json"},
        content=body.encode(),
    )  # fmt: skip


def with_host(code: str, emulator: Emulator) -> str:
    assert SPEC_HOST in code
    return code.replace(SPEC_HOST, emulator.url)


class SalesforceClient:
    """Stands in for the spec's SalesforceClient: records what it was built with."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret


def setup_steps_1_and_2(emulator: Emulator) -> str:
    """Steps 1 and 2 verbatim; return a token for sa:reporting-service."""
    stored = curl(emulator, "PUT", "/v1/secrets/integrations/salesforce/oauth", STORE_SECRET)
    assert stored.status_code in (200, 201), stored.text
    policy = curl(emulator, "POST", "/v1/policies", CREATE_POLICY)
    assert policy.status_code in (200, 201), policy.text
    policy_id = policy.json()["id"]
    assert policy_id.startswith("pol_")
    bound = curl(emulator, "POST", f"/v1/policies/{policy_id}/bindings", BIND_POLICY)
    assert bound.status_code in (200, 201), bound.text
    return emulator.token("sa:reporting-service")


def test_steps_1_to_3_store_grant_and_read_with_the_httpx_snippet(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCAIVAULT_TOKEN", setup_steps_1_and_2(emulator))
    namespace: dict[str, Any] = {"SalesforceClient": SalesforceClient}
    exec(with_host(HTTPX_READ, emulator), namespace)  # noqa: S102 (the spec's own snippet)
    sf = namespace["sf"]
    assert (sf.client_id, sf.client_secret) == ("3MVG9...", "REDACTED")
    assert namespace["secret"]["metadata"]["tags"] == ["salesforce", "oauth", "production"]
    # "it can read that one secret and nothing else"
    emulator.put_secret("integrations/salesforce/other", {"k": 1})
    other = with_host(HTTPX_READ, emulator).replace("salesforce/oauth", "salesforce/other")
    with pytest.raises(httpx.HTTPStatusError) as denied:
        exec(other, dict(namespace))  # noqa: S102
    assert denied.value.response.status_code == 403
    # "you can see exactly who read it and when"
    reads = [e for e in emulator.audit(path="integrations/salesforce/oauth")
             if e["action"] == "read"]  # fmt: skip
    assert [e["identity"] for e in reads] == ["sa:reporting-service"]


def test_step_4_read_secret_retries_rate_limits_and_fails_loud(emulator: Emulator) -> None:
    token = setup_steps_1_and_2(emulator)
    namespace: dict[str, Any] = {"token": token}
    exec(with_host(READ_SECRET, emulator), namespace)  # noqa: S102 (the spec's own snippet)
    read_secret = namespace["read_secret"]
    emulator.fault(match="integrations/salesforce/oauth", code="rate_limited", count=1,
                   retry_after=1)  # fmt: skip
    assert read_secret("integrations/salesforce/oauth")["client_id"] == "3MVG9..."
    assert emulator.faults()[0]["hits"] == 1
    with pytest.raises(PermissionError, match="access denied"):
        read_secret("integrations/other/secret")
    emulator.advance("2h")  # the token from the fixture lives 1h
    with pytest.raises(PermissionError, match="token_expired"):
        read_secret("integrations/salesforce/oauth")


# --- step 6: the spec's FastAPI webhook handler, served for real ------------------------


class SpecReceiver:
    """The spec's FastAPI app (handler lines unchanged), run by uvicorn in a thread."""

    def __init__(self, webhook_secret: str) -> None:
        self.cache: dict[str, Any] = {"value": "stale", "expires_at": 0}
        self.events: list[dict[str, Any]] = []
        self.app = self._build(webhook_secret)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/scaivault/events"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _build(self, webhook_secret: str) -> FastAPI:
        app = FastAPI()
        WEBHOOK_SECRET = webhook_secret.encode()  # os.environ["SCAIVAULT_WEBHOOK_SECRET"].encode()
        _cache = self.cache
        seen = self.events

        @app.post("/scaivault/events")
        async def scaivault_event(request: Request) -> dict[str, bool]:
            body = await request.body()
            sig = request.headers.get("X-ScaiVault-Signature", "")
            expected = hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(sig, expected):
                raise HTTPException(401, "bad signature")
            event = await request.json()
            seen.append(event)
            if event["path"] == "integrations/salesforce/oauth":
                _cache["value"] = None  # force refresh on next read
            return {"ok": True}

        return app

    def start(self) -> SpecReceiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the spec's receiver did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def spec_receiver() -> Iterator[SpecReceiver]:
    receiver = SpecReceiver("whsec_...").start()
    yield receiver
    receiver.stop()


def test_step_6_subscription_delivers_to_the_spec_handler(
    emulator: Emulator, spec_receiver: SpecReceiver
) -> None:
    setup_steps_1_and_2(emulator)
    body = SUBSCRIPTION.replace("https://reporting.acme.example/scaivault/events",
                                spec_receiver.url)  # fmt: skip
    created = curl(emulator, "POST", "/v1/subscriptions", body)
    assert created.status_code in (200, 201), created.text
    assert spec_receiver.cache["value"] == "stale"
    emulator.put_secret(
        "integrations/salesforce/oauth", {"client_id": "3MVG9...", "client_secret": "rotated"}
    )
    [attempt] = emulator.wait_deliveries(lambda d: d["ok"])
    assert (attempt["status"], attempt["type"]) == (200, "secret.updated")
    assert spec_receiver.cache["value"] is None  # the handler accepted the signature
    assert spec_receiver.events[0]["data"] == {"version": 2}


def test_step_6_handler_rejects_a_subscription_signed_with_another_secret(
    emulator: Emulator, spec_receiver: SpecReceiver
) -> None:
    body = SUBSCRIPTION.replace(
        "https://reporting.acme.example/scaivault/events", spec_receiver.url
    ).replace("whsec_...", "whsec_other")
    assert curl(emulator, "POST", "/v1/subscriptions", body).status_code in (200, 201)
    emulator.put_secret("integrations/salesforce/oauth", {"k": 1})
    emulator.wait_deliveries(lambda d: d["status"] == 401, count=2)  # rejected, and retried
    assert spec_receiver.events == [] and spec_receiver.cache["value"] == "stale"


def test_step_7_rotation_policy_fires_rotation_due(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    setup_steps_1_and_2(emulator)
    emulator.subscribe(
        webhook_sink.url,
        webhook_sink.secret,
        paths=["integrations/salesforce/oauth"],
        events=["rotation.due"],
    )
    created = curl(emulator, "POST", "/v1/rotation/policies", ROTATION_POLICY)
    assert created.status_code in (200, 201), created.text
    rot_id = created.json()["id"]
    assert rot_id.startswith("rot_")
    assigned = curl(emulator, "POST", f"/v1/rotation/policies/{rot_id}/secrets", ASSIGN)
    assert assigned.status_code in (200, 201), assigned.text
    emulator.advance("90d")  # "a new value every 90 days"
    event = json.loads(webhook_sink.wait(1)[0]["body"])
    assert (event["type"], event["path"]) == ("rotation.due", "integrations/salesforce/oauth")
    assert event["data"] == {"version": 1, "policy_id": rot_id, "grace_period": "48h",
                             "trigger": "schedule"}  # fmt: skip
    # "If you need to rotate it right now, the POST /v1/secrets/.../rotate endpoint triggers it"
    assert curl(emulator, "POST", "/v1/secrets/integrations/salesforce/oauth/rotate", "").is_success
    manual = json.loads(webhook_sink.wait(2)[1]["body"])
    assert manual["data"]["trigger"] == "manual" and manual["id"] != event["id"]
