"""The key service's HTTP API, and the one place its answers and httpx's errors become the
rotator errors (``TransientError``: retry; ``PermanentError``: stop and say what to fix).

No exception text of httpx or of the service reaches a message: they may echo a request,
headers included. Secrets travel as :class:`rotators.Secret` and are revealed only into the
request that sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from rotators import PermanentError, Secret, TransientError


@dataclass(frozen=True)
class IssuedKey:
    """A key the service issued: its id (not secret) and its secret."""

    id: str
    secret: Secret


@dataclass(frozen=True)
class KeyInfo:
    """What the service says about a key, without its secret."""

    id: str
    idempotency_key: str


class KeyService:
    """A client of the key service at ``base_url``; ``admin_token`` for the admin calls."""

    def __init__(self, base_url: str, admin_token: Secret | None, timeout: float) -> None:
        self._admin = admin_token
        self._http = httpx.Client(base_url=base_url, timeout=timeout, trust_env=False)

    def __enter__(self) -> KeyService:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    # --- the API ------------------------------------------------------------------------------

    def create(self, idempotency_key: str) -> IssuedKey:
        """A new key; the same key again for the same ``idempotency_key`` (safe to retry)."""
        body = self._json(self._as_admin("POST", "/v1/keys", idempotency_key=idempotency_key))
        return IssuedKey(id=str(body["id"]), secret=Secret(str(body["secret"])))

    def get(self, key_id: str) -> KeyInfo | None:
        """What the service knows of ``key_id``, or None when it has no such key."""
        response = self._as_admin("GET", f"/v1/keys/{_segment(key_id)}", missing_ok=True)
        if response.status_code == 404:
            return None
        body = self._json(response)
        return KeyInfo(id=str(body["id"]), idempotency_key=str(body["idempotency_key"]))

    def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id``; False when it was already gone (that is success too)."""
        path = f"/v1/keys/{_segment(key_id)}"
        return self._as_admin("DELETE", path, missing_ok=True).status_code != 404

    def whoami(self, api_key: Secret) -> str | None:
        """The id of the key ``api_key`` is the secret of, or None when the service refuses it."""
        response = self._send("GET", "/v1/whoami", api_key)
        if response.status_code == 401:
            return None
        return str(self._json(response)["key_id"])

    # --- plumbing -------------------------------------------------------------------------

    def _as_admin(
        self, method: str, path: str, *, idempotency_key: str = "", missing_ok: bool = False
    ) -> httpx.Response:
        if self._admin is None:
            raise PermanentError("no admin token: read it from admin_secret_path first")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._send(method, path, self._admin, headers)
        if response.status_code in {401, 403}:
            raise PermanentError(
                f"the key service refuses the admin token ({response.status_code}): put a "
                "valid admin token at the rule's admin_secret_path"
            )
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code >= 400:
            raise PermanentError(f"the key service answered {response.status_code} to {method}")
        return response

    def _send(
        self, method: str, path: str, token: Secret, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token.reveal()}", **(headers or {})}
        try:
            response = self._http.request(method, path, headers=auth)
        except httpx.TimeoutException:
            raise TransientError("the key service did not answer in time") from None
        except httpx.TransportError as exc:
            what = type(exc).__name__
            raise TransientError(f"the key service cannot be reached ({what})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"the key service answered {response.status_code}",
                retry_after=_retry_after(response),
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PermanentError(f"the key service answered {response.status_code} without JSON")
        return body


def _segment(value: str) -> str:
    """``value`` as one URL path segment (a key id never becomes a path of its own)."""
    return quote(value, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
