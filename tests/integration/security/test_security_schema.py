"""schemathesis against the receiver's own OpenAPI description (``GET /openapi.json``).

Two runs over real HTTP: unsigned requests generated from the schema (every one refused before
parsing, never a 5xx, nothing enqueued), and the same requests signed over the exact bytes sent
(they reach the parser and shape checks: only documented answers, never a 5xx).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core import NotSet

from orchestrator.receiver import openapi
from orchestrator.receiver.signing import sign
from orchestrator.state import keys
from tests.fixtures.receiver import WEBHOOK_SECRET, LiveReceiver

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi.document()).include(
    path="/scaivault/events", method="POST"
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
DOCUMENTED = {200, 202, 400, 401, 413, 415, 422, 503}


def _wire_body(body: Any) -> bytes:
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _queued(client: redis.Redis) -> int:
    return int(client.llen(keys.TASK_QUEUE))


@schema.parametrize()
@FUZZ
def test_unsigned_generated_requests_are_refused(
    case: Any, receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    response = case.call(base_url=receiver.url, timeout=10)
    assert response.status_code < 500, response.text
    if case.method.upper() == "POST":
        assert response.status_code in {401, 413, 415}
    else:  # schemathesis also tries methods the schema does not declare
        assert response.status_code == 405
    assert _queued(redis_client) == 0


@schema.parametrize()
@FUZZ
def test_signed_generated_requests_get_documented_answers(
    case: Any, receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    body = _wire_body(case.body)
    headers = {
        "content-type": "application/json",
        "x-scaivault-signature": sign(body, WEBHOOK_SECRET),
    }
    response = httpx.post(receiver.events_url, content=body, headers=headers, timeout=10)
    assert response.status_code in DOCUMENTED - {503}, response.text
    if response.status_code == 202 and response.json().get("status") == "queued":
        assert _queued(redis_client) >= 1
