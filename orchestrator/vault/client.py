"""The ScaiVault API client used by the worker and the CLI (sync, one pooled ``httpx.Client``).

Every request goes through :meth:`VaultClient._send`, which retries transient failures
(``rate_limited``, ``service_unavailable``, 5xx, timeouts, connection errors) with exponential
backoff and full jitter, honours ``Retry-After`` (capped; a floor under the backoff) and gives
up at an overall deadline. Which answers are errors, and which of those are transient, is
decided in :mod:`orchestrator.vault.errors` alone; the bearer token comes from
:mod:`orchestrator.vault.auth`. A request that may have changed state (PUT, POST) is never
re-sent once it may have reached ScaiVault: a lost or late response raises
:class:`~orchestrator.errors.WriteOutcomeUnknown` (transient, but never re-sent here) so the
caller settles it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from orchestrator import __version__
from orchestrator.backoff import backoff
from orchestrator.errors import (
    InvalidPath,
    UnexpectedResponse,
    VaultError,
    VaultTransientError,
    WriteOutcomeUnknown,
)
from orchestrator.log import get_logger
from orchestrator.settings import Settings
from orchestrator.vault.auth import TokenAuth
from orchestrator.vault.errors import Call, raise_for_error, transport_error
from rotators.contract import SecretVersion
from rotators.secret import SecretData

USER_AGENT = f"scaivault-rotator/{__version__}"
#: Full-jitter backoff (:func:`~orchestrator.backoff.backoff` with ``jitter=1.0``): attempt n
#: sleeps uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**(n-1))).
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0

log = get_logger(__name__)


@dataclass(frozen=True)
class Retrying:
    """A request ScaiVault failed transiently and that is about to be sent again: what an
    :attr:`VaultClient.on_retry` observer hears (no secret value, only what failed)."""

    method: str
    path: str
    code: str
    status: int | None
    attempt: int
    delay: float
    gives_up_in: float

    def describe(self) -> str:
        """``ScaiVault PUT answered 503 (service_unavailable); trying again, attempt 3, ...``"""
        answer = f"answered {self.status} ({self.code})" if self.status else f"failed ({self.code})"
        return (
            f"ScaiVault {self.method} {answer}; trying again (attempt {self.attempt + 1}), "
            f"giving up in {self.gives_up_in:.0f}s"
        )


@dataclass(frozen=True)
class VersionInfo:
    """One entry of ``GET /v1/secrets/{path}/versions`` (no data)."""

    version: int
    created_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def quote_path(path: str) -> str:
    """Validate and URL-quote a secret path; refuse empty segments, ``..`` and a leading ``/``."""
    if not isinstance(path, str) or not path:
        raise InvalidPath("secret path is empty: give one such as integrations/salesforce/oauth")
    if path.startswith("/"):
        raise InvalidPath(f"secret path {path!r} starts with '/': drop the leading slash")
    segments = path.split("/")
    for segment in segments:
        if segment in {"", ".", ".."}:
            raise InvalidPath(
                f"secret path {path!r} has an empty, '.' or '..' segment; "
                "write it as plain names separated by single slashes"
            )
    return "/".join(quote(segment, safe="") for segment in segments)


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.Client):
    """httpx's client without a cookie jar: ScaiVault authenticates each request with the
    bearer token and sets no cookies. Keeping none also spares every response the jar's
    parsing, a measurable share of a request's CPU (``tests/benchmarks/bench_e2e.py``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise AttributeError("the ScaiVault client keeps no cookies")


class VaultClient:
    """ScaiVault API client. Errors are the tree in :mod:`orchestrator.errors`.

    ``sleep``, ``clock`` and ``rng`` replace ``time.sleep``, ``time.monotonic`` and the jitter
    source, for tests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._deadline = settings.scaivault_retry_deadline
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # jitter only, not cryptography
        timeout = httpx.Timeout(
            connect=settings.scaivault_connect_timeout,
            read=settings.scaivault_read_timeout,
            write=settings.scaivault_read_timeout,
            pool=settings.scaivault_connect_timeout,
        )
        self._http = _Client(
            base_url=settings.require_vault(),
            auth=TokenAuth(settings.read_token),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        # Requests go to absolute URLs: httpx would otherwise parse each relative one and merge
        # it into base_url again, per request.
        self._root = str(self._http.base_url).rstrip("/")
        #: Told before each retry of a transient failure (the engine records it on the run it
        #: works on, so ``status`` shows a failing store while it is still being retried).
        self.on_retry: Callable[[Retrying], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> VaultClient:
        """A client configured from the environment (or ``settings``)."""
        return cls(settings or Settings.load())

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """``GET /v1/secrets/{path}`` (``?version=N``)."""
        params = {"version": str(version)} if version is not None else None
        call = Call("GET", path, "read")
        body = self._json(call, f"/v1/secrets/{quote_path(path)}", params=params)
        data = body.get("data")
        if not isinstance(data, Mapping) or not isinstance(body.get("version"), int):
            raise self._unexpected(call, "a secret with integer 'version' and object 'data'")
        return SecretVersion(
            path=str(body.get("path") or path),
            version=body["version"],
            data=SecretData(data),
            secret_type=str(body.get("secret_type") or "json"),
            metadata=dict(body.get("metadata") or {}),
            created_at=body.get("created_at"),
        )

    def versions(self, path: str) -> list[VersionInfo]:
        """``GET /v1/secrets/{path}/versions``, oldest first."""
        call = Call("GET", path, "read")
        body = self._json(call, f"/v1/secrets/{quote_path(path)}/versions")
        entries = body.get("versions")
        if not isinstance(entries, list):
            raise self._unexpected(call, "a 'versions' list")
        try:
            infos = [
                VersionInfo(int(e["version"]), e.get("created_at"), dict(e.get("metadata") or {}))
                for e in entries
            ]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._unexpected(call, "version entries with an integer 'version'") from None
        return sorted(infos, key=lambda info: info.version)

    def write(
        self,
        path: str,
        data: Mapping[str, Any],
        *,
        cas: int | None,
        secret_type: str = "json",
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> int:
        """``PUT /v1/secrets/{path}`` with ``options.cas``; return the new version number.

        A lost response raises :class:`WriteOutcomeUnknown` instead of re-sending.
        """
        merged = dict(options or {})
        if cas is not None:
            merged["cas"] = cas
        payload: dict[str, Any] = {"data": dict(data), "secret_type": secret_type}
        if metadata is not None:
            payload["metadata"] = dict(metadata)
        if merged:
            payload["options"] = merged
        call = Call("PUT", path, "write")
        response = self._send(call, f"/v1/secrets/{quote_path(path)}", json=payload)
        try:
            version = response.json()["version"]
        except (ValueError, KeyError, TypeError):
            version = None
        if not isinstance(version, int):
            raise WriteOutcomeUnknown(
                f"ScaiVault accepted PUT {path!r} but its answer has no integer 'version'; "
                "read the secret back to see which version is yours",
                code="outcome_unknown",
                status=response.status_code,
                path=path,
            )
        return version

    def rotate(self, path: str) -> dict[str, Any]:
        """``POST /v1/secrets/{path}/rotate``: ask ScaiVault to fire rotation now."""
        call = Call("POST", path, "rotate")
        response = self._send(call, f"/v1/secrets/{quote_path(path)}/rotate")
        if not response.content:
            return {}
        return self._decode(call, response)

    def list(self, prefix: str) -> list[str]:
        """``GET /v1/secrets?prefix=...``: every secret path under ``prefix``."""
        call = Call("GET", prefix, "list")
        body = self._json(call, "/v1/secrets", params={"prefix": prefix})
        entries = body.get("secrets")
        if not isinstance(entries, list):
            raise self._unexpected(call, "a 'secrets' list")
        paths = [e.get("path") if isinstance(e, Mapping) else e for e in entries]
        if not all(isinstance(p, str) for p in paths):
            raise self._unexpected(call, "'secrets' entries that are paths")
        return [str(p) for p in paths]

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing ---

    def _json(self, call: Call, url: str, **kwargs: Any) -> dict[str, Any]:
        return self._decode(call, self._send(call, url, **kwargs))

    def _decode(self, call: Call, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._unexpected(call, "a JSON object")
        return body

    @staticmethod
    def _unexpected(call: Call, expected: str) -> UnexpectedResponse:
        return UnexpectedResponse(
            f"ScaiVault's answer to {call.method} {call.path!r} is not {expected}; check that "
            "SCAIVAULT_URL points at ScaiVault itself",
            code="unexpected_response",
            path=call.path,
        )

    def _send(self, call: Call, url: str, **kwargs: Any) -> httpx.Response:
        """Send once, then retry transient failures until the deadline."""
        give_up_at = self._clock() + self._deadline
        attempt = 1
        while True:
            try:
                return self._attempt(call, url, **kwargs)
            except WriteOutcomeUnknown:  # it may still land: the caller settles it
                raise
            except VaultTransientError as exc:
                delay = self._delay(exc, attempt)
                if self._clock() + delay > give_up_at:
                    log.warning("vault_gave_up", **self._fields(call, exc, attempt))
                    raise
                log.info("vault_retry", delay=round(delay, 3), **self._fields(call, exc, attempt))
                self._tell(call, exc, attempt, delay, give_up_at - self._clock())
                self._sleep(delay)
                attempt += 1

    def _tell(self, call: Call, exc: VaultError, attempt: int, delay: float, left: float) -> None:
        """Tell :attr:`on_retry`; an observer that fails must not fail the request."""
        if self.on_retry is None:
            return
        notice = Retrying(call.method, call.path, exc.code, exc.status, attempt, delay, left)
        try:
            self.on_retry(notice)
        except Exception as err:
            log.warning("vault_retry_observer_failed", reason=type(err).__name__)

    def _attempt(self, call: Call, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(call.method, self._root + url, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(exc, call) from exc
        raise_for_error(response, call)
        return response

    def _delay(self, exc: VaultTransientError, attempt: int) -> float:
        wait = backoff(attempt, base=BACKOFF_BASE, cap=BACKOFF_CAP, jitter=1.0, rng=self._rng)
        # Retry-After is a floor: a server answering "0" every time must not be hammered.
        return max(wait, exc.retry_after or 0.0)

    @staticmethod
    def _fields(call: Call, exc: VaultError, attempt: int) -> dict[str, Any]:
        return {
            "method": call.method,
            "path": call.path,
            "code": exc.code,
            "status": exc.status,
            "attempt": attempt,
        }
