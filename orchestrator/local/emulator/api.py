"""ScaiVault's own routes: secrets, policies, subscriptions, rotation policies, audit."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.local.emulator.endpoint import admin, caller, committed, int_param, ok
from orchestrator.local.emulator.schema import (
    AssignBody,
    BindingBody,
    PolicyBody,
    PutSecret,
    RotationPolicyBody,
    SubscriptionBody,
    parse,
)
from orchestrator.local.emulator.state import (
    RotationPolicy,
    SecretRecord,
    Subscription,
    Version,
    iso,
)

# --- shapes -----------------------------------------------------------------------------


def secret_json(path: str, version: Version) -> dict[str, Any]:
    return {
        "path": path,
        "version": version.version,
        "data": version.data,
        "secret_type": version.secret_type,
        "metadata": version.metadata,
        "created_at": iso(version.created_at),
        "created_by": version.created_by,
    }


def versions_json(record: SecretRecord) -> dict[str, Any]:
    return {
        "path": record.path,
        "versions": [
            {
                "version": v.version,
                "created_at": iso(v.created_at),
                "created_by": v.created_by,
                "metadata": v.metadata,
            }
            for v in record.versions
        ],
    }


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "name": sub.name,
        "paths": sub.paths,
        "events": sub.events,
        "delivery": {"type": "webhook", "url": sub.url},
        "created_at": iso(sub.created_at),
    }


def rotation_json(policy: RotationPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "interval": policy.interval,
        "grace_period": policy.grace_period,
        "auto_generate": policy.auto_generate,
        "secrets": [{"secret_path": p, "next_due": iso(d)} for p, d in policy.next_due.items()],
    }


# --- secrets ----------------------------------------------------------------------------


async def get_secret(request: Request) -> Response:
    service, identity = caller(request)
    path = request.path_params["path"]
    version = service.read(identity, path, int_param(request, "version", None))
    return ok(secret_json(path, version))


async def put_secret(request: Request) -> Response:
    service, identity = caller(request)
    body = await parse(request, PutSecret)
    path = request.path_params["path"]
    version, created = service.write(identity, path, body)
    answer = {"path": path, "version": version.version, "created_at": iso(version.created_at)}
    return await committed(request, answer, 201 if created else 200)


async def get_versions(request: Request) -> Response:
    service, identity = caller(request)
    return ok(versions_json(service.versions(identity, request.path_params["path"])))


async def rotate_secret(request: Request) -> Response:
    service, identity = caller(request)
    path = request.path_params["path"]
    event_id = service.rotate_now(identity, path)
    return await committed(
        request, {"path": path, "event_id": event_id, "status": "triggered"}, 202
    )


async def list_secrets(request: Request) -> Response:
    service, identity = caller(request)
    prefix = request.query_params.get("prefix", "")
    records = service.listing(identity, prefix)
    return ok(
        {
            "secrets": [
                {
                    "path": r.path,
                    "version": r.current.version,
                    "secret_type": r.current.secret_type,
                    "updated_at": iso(r.current.created_at),
                }
                for r in records
            ]
        }
    )


# --- policies, subscriptions, rotation --------------------------------------------------


async def create_policy(request: Request) -> Response:
    service = admin(request)
    policy = service.create_policy(await parse(request, PolicyBody))
    return await committed(request, policy.model_dump(mode="json"), 201)


async def list_policies(request: Request) -> Response:
    service = admin(request)
    return ok({"policies": [p.model_dump(mode="json") for p in service.state.policies.values()]})


async def bind_policy(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, BindingBody)
    policy = service.bind(request.path_params["policy_id"], body.identity_type, body.identity_id)
    return await committed(
        request,
        {
            "policy_id": policy.id,
            "identity_type": body.identity_type,
            "identity_id": body.identity_id,
        },
        201,
    )


async def create_subscription(request: Request) -> Response:
    service = admin(request)
    subscription = service.subscribe(await parse(request, SubscriptionBody))
    return await committed(request, subscription_json(subscription), 201)


async def list_subscriptions(request: Request) -> Response:
    service = admin(request)
    subs = service.state.subscriptions.values()
    return ok({"subscriptions": [subscription_json(s) for s in subs]})


async def delete_subscription(request: Request) -> Response:
    service = admin(request)
    service.unsubscribe(request.path_params["subscription_id"])
    return await committed(request, None, 204)


async def create_rotation_policy(request: Request) -> Response:
    service = admin(request)
    policy = service.create_rotation_policy(await parse(request, RotationPolicyBody))
    return await committed(request, rotation_json(policy), 201)


async def list_rotation_policies(request: Request) -> Response:
    service = admin(request)
    policies = service.state.rotation_policies.values()
    return ok({"policies": [rotation_json(p) for p in policies]})


async def assign_rotation(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, AssignBody)
    policy = service.assign(request.path_params["policy_id"], body.secret_path)
    return await committed(
        request,
        {
            "policy_id": policy.id,
            "secret_path": body.secret_path,
            "next_due": iso(policy.next_due[body.secret_path]),
        },
        201,
    )


async def read_audit(request: Request) -> Response:
    service, identity = caller(request)
    limit = int_param(request, "limit", 1000) or 1000
    entries = service.audit_entries(
        identity, request.query_params.get("path"), request.query_params.get("identity"), limit
    )
    return ok({"entries": entries})


ROUTES = [
    Route("/v1/secrets", list_secrets),
    Route("/v1/secrets/{path:path}/versions", get_versions),
    Route("/v1/secrets/{path:path}/rotate", rotate_secret, methods=["POST"]),
    Route("/v1/secrets/{path:path}", get_secret, methods=["GET"]),
    Route("/v1/secrets/{path:path}", put_secret, methods=["PUT"]),
    Route("/v1/policies", create_policy, methods=["POST"]),
    Route("/v1/policies", list_policies, methods=["GET"]),
    Route("/v1/policies/{policy_id}/bindings", bind_policy, methods=["POST"]),
    Route("/v1/subscriptions", create_subscription, methods=["POST"]),
    Route("/v1/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}", delete_subscription, methods=["DELETE"]),
    Route("/v1/rotation/policies", create_rotation_policy, methods=["POST"]),
    Route("/v1/rotation/policies", list_rotation_policies, methods=["GET"]),
    Route("/v1/rotation/policies/{policy_id}/secrets", assign_rotation, methods=["POST"]),
    Route("/v1/audit", read_audit),
]
