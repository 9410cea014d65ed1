"""What the emulator stores (secrets, tokens, policies, subscriptions, clock) and its state file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from orchestrator.errors import ConfigError


def iso(moment: datetime) -> str:
    """``2026-11-27T08:00:00.123Z``: UTC with a ``Z``, as ScaiVault writes times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Version(BaseModel):
    """One stored version of a secret."""

    version: int
    data: dict[str, Any]
    secret_type: str
    metadata: dict[str, Any]
    created_at: datetime
    created_by: str


class SecretRecord(BaseModel):
    """A secret path with its retained versions, oldest first."""

    path: str
    versions: list[Version] = Field(default_factory=list)
    max_versions: int | None = None

    @property
    def current(self) -> Version:
        return self.versions[-1]

    def find(self, version: int) -> Version | None:
        """The retained version ``version``, or ``None`` (never written or pruned)."""
        return next((v for v in self.versions if v.version == version), None)

    def add(self, version: Version) -> None:
        """Append ``version`` and prune the oldest beyond ``max_versions``."""
        self.versions.append(version)
        if self.max_versions is not None and len(self.versions) > self.max_versions:
            del self.versions[: len(self.versions) - self.max_versions]


class Token(BaseModel):
    """A bearer token issued by the emulator for one identity."""

    identity: str
    expires_at: datetime | None


class Rule(BaseModel):
    """One policy rule: permissions on paths matching a glob."""

    path_pattern: str
    permissions: list[str]


class Binding(BaseModel):
    """An identity bound to a policy."""

    identity_type: str
    identity_id: str


class Policy(BaseModel):
    """An access policy and the identities bound to it."""

    id: str
    name: str
    description: str = ""
    rules: list[Rule]
    bindings: list[Binding] = Field(default_factory=list)


class Subscription(BaseModel):
    """A webhook subscription to events on paths (globs allowed)."""

    id: str
    name: str
    paths: list[str]
    events: list[str]
    url: str
    secret: str
    created_at: datetime


class RotationPolicy(BaseModel):
    """A rotation schedule; ``next_due`` maps each assigned secret path to its due time."""

    id: str
    name: str
    interval: str
    grace_period: str
    auto_generate: bool
    next_due: dict[str, datetime] = Field(default_factory=dict)


class State(BaseModel):
    """Everything that survives a restart when the emulator has a state file."""

    secrets: dict[str, SecretRecord] = Field(default_factory=dict)
    tokens: dict[str, Token] = Field(default_factory=dict)
    policies: dict[str, Policy] = Field(default_factory=dict)
    subscriptions: dict[str, Subscription] = Field(default_factory=dict)
    rotation_policies: dict[str, RotationPolicy] = Field(default_factory=dict)
    clock_offset: float = 0.0

    def now(self) -> datetime:
        """The emulator's clock: real UTC time moved forward by ``POST /v1/_emulator/clock``."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset)


def load_state(path: Path | None) -> State:
    """The state saved at ``path``, or an empty state when there is none yet."""
    if path is None or not path.exists():
        return State()
    try:
        return State.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"{exc.error_count()} problem(s)"
        raise ConfigError(
            f"state file {path} is not a readable emulator state ({reason}); "
            "move it away to start with an empty emulator"
        ) from None


class StateWriter:
    """Saves the state to its file atomically: :meth:`render` on the event loop, then
    :meth:`write` in a worker thread.

    Only secrets that changed since the last render are serialized again: with a few hundred
    secrets of ten versions each, dumping everything would cost milliseconds per write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._blobs: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        self._lock = threading.Lock()

    def render(self, state: State) -> bytes:
        """``state`` as the file's bytes; call it where nothing mutates ``state`` meanwhile."""
        blobs = {path: self._blob(record) for path, record in state.secrets.items()}
        self._blobs = blobs
        secrets = b",".join(
            json.dumps(path).encode() + b":" + blob for path, (_, blob) in blobs.items()
        )
        rest = state.model_dump_json(exclude={"secrets"}).encode()
        return b'{"secrets":{' + secrets + b"}," + rest[1:]

    def write(self, content: bytes) -> None:
        """Replace the file with ``content`` (blocking; one write at a time)."""
        with self._lock:
            atomic_write(self.path, content)

    def forget(self) -> None:
        """Drop the cache (after a reset, a path may come back with the same version number)."""
        self._blobs.clear()

    def _blob(self, record: SecretRecord) -> tuple[tuple[Any, ...], bytes]:
        newest = record.versions[-1] if record.versions else None
        stamp = (
            id(newest),
            len(record.versions),
            record.max_versions,
            newest.version if newest else 0,
            newest.created_at if newest else None,
        )
        cached = self._blobs.get(record.path)
        if cached is not None and cached[0] == stamp:
            return cached
        return stamp, record.model_dump_json().encode()


def atomic_write(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` so a reader (or a restart) sees old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            # No fsync: this guards against a killed process, not a lost machine, and the
            # chaos suite writes often.
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
