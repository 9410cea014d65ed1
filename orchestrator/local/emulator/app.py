"""The emulator's ASGI app: routes, error answers, the rotation tick and fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from orchestrator.local.emulator import api, control
from orchestrator.local.emulator.delivery import DeliveryConfig, Dispatcher
from orchestrator.local.emulator.endpoint import ok
from orchestrator.local.emulator.errors import ApiError
from orchestrator.local.emulator.fault import DropFilter, FaultBook, FaultMiddleware
from orchestrator.local.emulator.service import VaultService
from orchestrator.log import get_logger

log = get_logger("orchestrator.local.emulator")


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


async def client_gone(request: Request, exc: Exception) -> Response:
    # The caller hung up before its body was read; there is nobody left to answer.
    log.debug("client_disconnected", method=request.method, path=request.url.path)
    return Response(status_code=499)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("emulator_bug", method=request.method, path=request.url.path, exc_info=exc)
    error = ApiError("internal_error", "emulator bug; see its log", status=500)
    return JSONResponse(error.body(), status_code=500)


ROUTES = [Route("/healthz", healthz), *api.ROUTES, *control.ROUTES]


async def _tick(app: Starlette) -> None:
    """Fire due rotations every ``tick_interval`` seconds; count the ticks that completed."""
    service: VaultService = app.state.service
    while True:
        await asyncio.sleep(app.state.tick_interval)
        try:
            service.check_due()
            await service.persist()
        except Exception:
            log.exception("rotation_tick_failed")
        app.state.ticks += 1


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
            await service.persist()
            log.info("emulator_stopped")

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: unexpected_error,
        },
    )
    app.state.service = service
    app.state.faults = faults
    app.state.tick_interval = tick_interval
    app.state.ticks = 0
    logging.getLogger("uvicorn.error").addFilter(DropFilter())
    return FaultMiddleware(app, faults)
