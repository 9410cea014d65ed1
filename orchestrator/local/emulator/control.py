"""The emulator's control routes under /v1/_emulator/ (admin token only, never faulted)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.duration import parse_duration
from orchestrator.local.emulator.endpoint import admin, committed, int_param, ok
from orchestrator.local.emulator.errors import not_found
from orchestrator.local.emulator.schema import (
    ClockBody,
    ConfigBody,
    FaultBody,
    RedeliverBody,
    TokenRequest,
    parse,
)
from orchestrator.local.emulator.state import iso
from orchestrator.log import get_logger

log = get_logger("orchestrator.local.emulator")


# --- emulator control -------------------------------------------------------------------


async def issue_token(request: Request) -> Response:
    service = admin(request)
    body = await parse(request, TokenRequest)
    token, issued = service.issue_token(body.identity, body.ttl)
    expires = iso(issued.expires_at) if issued.expires_at else None
    answer = {"token": token, "identity": issued.identity, "expires_at": expires}
    return await committed(request, answer, 201)


async def add_fault(request: Request) -> Response:
    admin(request)
    body = await parse(request, FaultBody)
    fault = request.app.state.faults.add(body.model_dump())
    log.info("fault_added", fault_id=fault.id, match=fault.match, code=fault.code)
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
    return await committed(request, {"now": iso(now), "offset_seconds": service.state.clock_offset})


async def read_clock(request: Request) -> Response:
    service = admin(request)
    # ticks: rotation checks completed so far; a test waits for more before asserting that
    # nothing fired.
    return ok(
        {
            "now": iso(service.state.now()),
            "offset_seconds": service.state.clock_offset,
            "ticks": request.app.state.ticks,
        }
    )


async def list_deliveries(request: Request) -> Response:
    service = admin(request)
    keys = ("event_id", "path", "type", "subscription_id")
    filters = {k: request.query_params.get(k) for k in keys}
    limit = int_param(request, "limit", None)
    attempts = [
        a
        for a in service.dispatcher.attempts
        if all(v is None or a[k] == v for k, v in filters.items())
    ]
    if limit is not None:
        attempts = attempts[-limit:]
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
    return await committed(request, None, 204)


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


ROUTES = [
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
