"""The ScaiVault API client used by the worker and the CLI (sync, one pooled ``httpx.Client``).

INTERFACE SKETCH — the foundation issue's client work fills in the bodies; signatures are what
the engine, receiver and CLI code against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.settings import Settings
from rotators.contract import SecretVersion


@dataclass(frozen=True)
class VersionInfo:
    """One entry of ``GET /v1/secrets/{path}/versions`` (no data)."""

    version: int
    created_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def quote_path(path: str) -> str:
    """Validate and URL-quote a secret path; refuse empty segments, ``..`` and a leading ``/``."""
    raise NotImplementedError


class VaultClient:
    """ScaiVault API client. Errors are the tree in :mod:`orchestrator.errors`."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        raise NotImplementedError

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """``GET /v1/secrets/{path}`` (``?version=N``)."""
        raise NotImplementedError

    def versions(self, path: str) -> list[VersionInfo]:
        """``GET /v1/secrets/{path}/versions``, oldest first."""
        raise NotImplementedError

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
        """``PUT /v1/secrets/{path}`` with ``options.cas``; return the new version number."""
        raise NotImplementedError

    def rotate(self, path: str) -> dict[str, Any]:
        """``POST /v1/secrets/{path}/rotate``: ask ScaiVault to fire rotation now."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """``GET /v1/secrets?prefix=...``: every secret path under ``prefix``."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
