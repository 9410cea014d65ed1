"""What every emulator route shares: the caller's identity, query parsing, JSON answers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrator.local.emulator.access import require_admin
from orchestrator.local.emulator.errors import invalid
from orchestrator.local.emulator.schema import is_number
from orchestrator.local.emulator.service import VaultService


def service_of(request: Request) -> VaultService:
    """The emulator behind the app serving ``request``."""
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
    """Query parameter ``name`` as a whole number of at least ``low`` (400 otherwise)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not is_number(raw) or int(raw) < low:
        raise invalid(f"{name}: expected a whole number of at least {low}")
    return int(raw)


def ok(body: Any, status: int = 200) -> JSONResponse:
    """A JSON answer."""
    return JSONResponse(body, status_code=status)


async def committed(request: Request, body: Any = None, status: int = 200) -> Response:
    """The answer to a request that changed the state, sent only once the change is on disk.

    A client that saw the answer can rely on the change surviving a SIGKILL of the emulator.
    ``body`` None answers without content (204).
    """
    await service_of(request).persist()
    return Response(status_code=status) if body is None else ok(body, status)
