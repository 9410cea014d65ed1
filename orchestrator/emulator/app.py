"""The emulator's HTTP API: ScaiVault routes plus control routes (/v1/_emulator/)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from orchestrator.duration import parse_duration
from orchestrator.emulator.access import require_admin
from orchestrator.emulator.delivery import DeliveryConfig, Dispatcher
from orchestrator.emulator.errors import ApiError, invalid, not_found
from orchestrator.emulator.fault import DropFilter, FaultBook, FaultMiddleware
from orchestrator.emulator.schema import (
    AssignBody,
    BindingBody,
    ClockBody,
    ConfigBody,
    FaultBody,
    PolicyBody,
    PutSecret,
    RedeliverBody,
    RotationPolicyBody,
    SubscriptionBody,
    TokenRequest,
    is_number,
    parse,
)
from orchestrator.emulator.service import VaultService
from orchestrator.emulator.state import RotationPolicy, SecretRecord, Subscription, Version, iso
from orchestrator.log import get_logger

log = get_logger("orchestrator.emulator")

Handler = Callable[[Request], Awaitable[Response]]


def service_of(request: Request) -> VaultService:
    service: VaultService = request.app.state.service
    return service


def caller(request: Request) -> tuple[VaultService, str]:
    """The service and the authenticated identity of the request (401 otherwise)."""
    service = service_of(request)
    return service, service.identity(request.headers.get("authorization"))


def admin(request: Request) -> VaultService:
    """The service, if the request carries the admin token (401/403 otherwise)."""
    service, identity = caller(request)
    require_admin(identity)
    return service


def int_param(request: Request, name: str, default: int | None, low: int = 1) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not is_number(raw) or int(raw) < low:
        raise invalid(f"{name}: expected a whole number of at least {low}")
    return int(raw)


def ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


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
    return ok(answer, 201 if created else 200)


async def get_versions(request: Request) -> Response:
    service, identity = caller(request)
    return ok(versions_json(service.versions(identity, request.path_params["path"])))


async def rotate_secret(request: Request) -> Response:
    service, identity = caller(request)
    path = request.path_params["path"]
    event_id = service.rotate_now(identity, path)
    return ok({"path": path, "event_id": event_id, "status": "triggered"}, 202)


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
    return ok(policy.model_dump(mode="json"), 201)


async def list_policies(request: Request) -> Response:
    service = admin(request)
    return ok({"policies": [p.model_dump(mode="json") for p in service.state.policies.values()]})


async def bind_policy(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, BindingBody)
    policy = service.bind(request.path_params["policy_id"], body.identity_type, body.identity_id)
    return ok(
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
    return ok(subscription_json(subscription), 201)


async def list_subscriptions(request: Request) -> Response:
    service = admin(request)
    subs = service.state.subscriptions.values()
    return ok({"subscriptions": [subscription_json(s) for s in subs]})


async def delete_subscription(request: Request) -> Response:
    service = admin(request)
    service.unsubscribe(request.path_params["subscription_id"])
    return Response(status_code=204)


async def create_rotation_policy(request: Request) -> Response:
    service = admin(request)
    policy = service.create_rotation_policy(await parse(request, RotationPolicyBody))
    return ok(rotation_json(policy), 201)


async def list_rotation_policies(request: Request) -> Response:
    service = admin(request)
    policies = service.state.rotation_policies.values()
    return ok({"policies": [rotation_json(p) for p in policies]})


async def assign_rotation(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, AssignBody)
    policy = service.assign(request.path_params["policy_id"], body.secret_path)
    return ok(
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


# --- emulator control -------------------------------------------------------------------


async def issue_token(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, TokenRequest)
    token, issued = service.issue_token(body.identity, body.ttl)
    expires = iso(issued.expires_at) if issued.expires_at else None
    return ok({"token": token, "identity": issued.identity, "expires_at": expires}, 201)


async def add_fault(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, FaultBody)
    fault = request.app.state.faults.add(body.model_dump())
    log.info("fault_added", fault_id=fault.id, match=fault.match, code=fault.code)
    del service
    return ok({"id": fault.id}, 201)


async def list_faults(request: Request) -> Response:
    admin(request)
    return ok({"faults": request.app.state.faults.describe()})


async def clear_faults(request: Request) -> Response:
    admin(request)
    request.app.state.faults.clear()
    return Response(status_code=204)


async def advance_clock(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, ClockBody)
    now = service.advance(parse_duration(body.advance))
    return ok({"now": iso(now), "offset_seconds": service.state.clock_offset})


async def read_clock(request: Request) -> Response:
    service = admin(request)
    return ok({"now": iso(service.state.now()), "offset_seconds": service.state.clock_offset})


async def list_deliveries(request: Request) -> Response:
    service = admin(request)
    filters = {k: request.query_params.get(k) for k in ("event_id", "path", "type")}
    attempts = [
        a
        for a in service.dispatcher.attempts
        if all(v is None or a[k] == v for k, v in filters.items())
    ]
    return ok({"deliveries": attempts, "pending": service.dispatcher.pending()})


async def redeliver(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, RedeliverBody)
    event_id = request.path_params["event_id"]
    event = service.dispatcher.redeliver(event_id, body.times, body.concurrent)
    if event is None:
        raise not_found(f"event {event_id!r} not found (never sent, or forgotten after reset)")
    return ok({"event_id": event_id, "times": body.times, "targets": len(event.targets)}, 202)


async def reset(request: Request) -> Response:
    admin(request).reset()
    request.app.state.faults.clear()
    return Response(status_code=204)


async def read_config(request: Request) -> Response:
    service = admin(request)
    config = service.dispatcher.config
    return ok(
        {
            "retry_schedule": config.retry_schedule,
            "delivery_timeout": config.delivery_timeout,
            "max_retry_after": config.max_retry_after,
            "tick_interval": request.app.state.tick_interval,
        }
    )


async def update_config(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, ConfigBody)
    config = service.dispatcher.config
    if body.retry_schedule is not None:
        config.retry_schedule = list(body.retry_schedule)
    if body.delivery_timeout is not None:
        config.delivery_timeout = body.delivery_timeout
    if body.max_retry_after is not None:
        config.max_retry_after = body.max_retry_after
    if body.tick_interval is not None:
        request.app.state.tick_interval = body.tick_interval
    return await read_config(request)


async def healthz(request: Request) -> Response:
    return ok({"ok": True})


# --- errors -----------------------------------------------------------------------------


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError("not_found", f"no route {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = ApiError("method_not_allowed", f"{request.method} is not allowed here")
    else:
        error = ApiError("invalid_request", str(exc.detail), status=exc.status_code)
    return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("emulator_bug", method=request.method, path=request.url.path, exc_info=exc)
    error = ApiError("internal_error", "emulator bug; see its log", status=500)
    return JSONResponse(error.body(), status_code=500)


ROUTES = [
    Route("/healthz", healthz),
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
    Route("/v1/_emulator/tokens", issue_token, methods=["POST"]),
    Route("/v1/_emulator/faults", add_fault, methods=["POST"]),
    Route("/v1/_emulator/faults", list_faults, methods=["GET"]),
    Route("/v1/_emulator/faults", clear_faults, methods=["DELETE"]),
    Route("/v1/_emulator/clock", advance_clock, methods=["POST"]),
    Route("/v1/_emulator/clock", read_clock, methods=["GET"]),
    Route("/v1/_emulator/deliveries", list_deliveries),
    Route("/v1/_emulator/deliveries/{event_id}/redeliver", redeliver, methods=["POST"]),
    Route("/v1/_emulator/reset", reset, methods=["POST"]),
    Route("/v1/_emulator/config", read_config, methods=["GET"]),
    Route("/v1/_emulator/config", update_config, methods=["POST"]),
]


async def _tick(app: Starlette) -> None:
    """Fire due rotations every ``tick_interval`` seconds."""
    service: VaultService = app.state.service
    while True:
        await asyncio.sleep(app.state.tick_interval)
        try:
            service.check_due()
        except Exception:
            log.exception("rotation_tick_failed")


def create_app(
    admin_token: str,
    state_file: Path | None = None,
    *,
    delivery: DeliveryConfig | None = None,
    tick_interval: float = 0.5,
) -> ASGIApp:
    """The emulator as an ASGI app (fault injection outermost)."""
    if not admin_token:
        raise ValueError("the emulator needs a non-empty admin token")
    service = VaultService(admin_token, state_file, Dispatcher(delivery))
    faults = FaultBook()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.get_running_loop().create_task(_tick(app))
        log.info(
            "emulator_started",
            state_file=str(state_file) if state_file else None,
            secrets=len(service.state.secrets),
        )
        try:
            yield
        finally:
            ticker.cancel()
            await service.dispatcher.close()
            service.save()
            log.info("emulator_stopped")

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
    app.state.service = service
    app.state.faults = faults
    app.state.tick_interval = tick_interval
    logging.getLogger("uvicorn.error").addFilter(DropFilter())
    return FaultMiddleware(app, faults)
