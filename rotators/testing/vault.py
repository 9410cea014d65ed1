"""An in-memory, versioned ScaiVault for rotator tests: what the kit's rotations read from."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rotators.contract import SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData


class MemoryVault:
    """An in-memory, versioned ScaiVault implementing :class:`~rotators.VaultReader`."""

    def __init__(self) -> None:
        self._versions: dict[str, list[SecretVersion]] = {}

    def put(
        self, path: str, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> SecretVersion:
        """Write a new version of ``path`` and return it."""
        versions = self._versions.setdefault(path, [])
        version = SecretVersion(
            path=path,
            version=len(versions) + 1,
            data=SecretData(data),
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC).isoformat(),
        )
        versions.append(version)
        return version

    def delete(self, path: str) -> list[SecretVersion]:
        """Remove every version of ``path`` (a missing secret); returns them."""
        return self._versions.pop(path, [])

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """The current version of ``path``, or version ``version``.

        A missing path or version raises :class:`~rotators.PermanentError`, as a worker's
        reader raises one of its subclasses (``NotFound``); an unreachable ScaiVault would be
        a :class:`~rotators.TransientError`.
        """
        versions = self._versions.get(path)
        if not versions:
            raise PermanentError(f"secret {path!r} not found")
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise PermanentError(f"secret {path!r} has no version {version}")
        return versions[version - 1]
