"""The OpenAPI 3.1 description of the webhook receiver (served at ``GET /openapi.json``).

It documents the endpoint for operators and lets a fuzzer such as schemathesis generate
requests; the signature (an HMAC of the raw body) has to be added by a hook that signs the
exact bytes sent.
"""

from __future__ import annotations

from typing import Any

from orchestrator import __version__

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "reason": {"type": "string"},
        "field": {"type": "string"},
    },
    "required": ["error"],
}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "status": {"enum": ["queued", "recorded", "ignored", "duplicate"]},
        "event_id": {"type": "string"},
        "task_id": {"type": "string"},
    },
    "required": ["status"],
}
_EVENT = {
    "type": "object",
    "required": ["id", "type", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-]{1,128}$"},
        "type": {"type": "string", "examples": ["rotation.due", "secret.updated"]},
        "created_at": {"type": "string", "format": "date-time"},
        "path": {"type": "string", "maxLength": 512},
        "data": {
            "type": "object",
            "properties": {
                "version": {"type": "integer", "minimum": 0},
                "policy_id": {"type": "string"},
                "grace_period": {"type": ["string", "null"], "examples": ["48h"]},
                "trigger": {"enum": ["schedule", "manual"]},
            },
        },
    },
}


def _response(description: str, schema: dict[str, Any], **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = {name: {"schema": {"type": t}} for name, t in headers.items()}
    return out


def document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    events = {
        "summary": "Receive a signed ScaiVault event",
        "parameters": [
            {
                "name": "X-ScaiVault-Signature",
                "in": "header",
                "required": True,
                "description": "Lowercase hex HMAC-SHA256 of the raw body, keyed with the secret",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT}}},
        "responses": {
            "202": _response("Queued, recorded or ignored", _ACCEPTED),
            "200": _response("Duplicate of an event already accepted", _ACCEPTED),
            "400": _response("Not acceptable JSON, or created_at out of window", _ERROR),
            "401": _response("Missing or bad signature", _ERROR, **{"WWW-Authenticate": "string"}),
            "408": _response("Body not complete within ROTATOR_BODY_TIMEOUT; closed", _ERROR),
            "413": _response("Body over 64 KiB", _ERROR),
            "415": _response("Not application/json", _ERROR),
            "422": _response("JSON of the wrong shape", _ERROR),
            "503": _response(
                "Redis unreachable or slow; retry", _ERROR, **{"Retry-After": "integer"}
            ),
        },
    }
    status = {"200": _response("OK", {"type": "object"})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "scaivault-rotator webhook receiver", "version": __version__},
        "paths": {
            "/scaivault/events": {"post": events},
            "/healthz": {"get": {"summary": "Process up", "responses": status}},
            "/readyz": {
                "get": {
                    "summary": "Redis reachable",
                    "responses": {**status, "503": _response("Not ready", {"type": "object"})},
                }
            },
        },
    }
