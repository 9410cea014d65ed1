"""Bearer-token auth for the ScaiVault client, re-reading the token when ScaiVault refuses it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator

import httpx

from orchestrator.vault.errors import error_fields


class TokenAuth(httpx.Auth):
    """Bearer auth that re-reads the token once when ScaiVault says it expired or is unknown."""

    requires_response_body = True

    def __init__(self, read_token: Callable[[], str]) -> None:
        self._read_token = read_token
        self._token: str | None = None
        self._lock = threading.Lock()

    def _current(self, refresh: bool = False) -> str:
        with self._lock:
            if self._token is None or refresh:
                self._token = self._read_token()
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.is_success:  # an error code comes only with an error status
            return
        if error_fields(response)[0] not in {"token_expired", "authentication_required"}:
            return
        fresh = self._current(refresh=True)
        if fresh != token:  # the same token would only be refused again
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request
