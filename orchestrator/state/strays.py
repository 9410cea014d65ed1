"""Stray credentials: ones left valid at a target that no ScaiVault version holds any more.

A rollback whose rotator cannot revoke the new credential (a promoted Salesforce pair), or an
abandoned issuer credential whose revocation failed, leaves a working credential nobody uses
or rotates. Each is recorded here (one hash, :data:`orchestrator.state.keys.STRAYS`, facts only:
path, rotation, version, what and since when; never a value) until on-call revokes it by hand
and acknowledges it (``acknowledge PATH``); ``status`` lists them meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import redis

from orchestrator.state import keys


@dataclass(frozen=True)
class Stray:
    """One credential left valid at a target."""

    path: str
    rotation_id: str
    detail: str
    since: str
    version: int | None = None


class Strays:
    """The stray credentials recorded in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def add(self, path: str, rotation_id: str, detail: str, version: int | None = None) -> Stray:
        """Record a stray credential of ``rotation_id`` (one per rotation; a repeat replaces)."""
        seconds, micros = self.client.time()
        since = datetime.fromtimestamp(seconds + micros / 1e6, UTC)
        stray = Stray(path, rotation_id, detail, since.isoformat(timespec="seconds"), version)
        self.client.hset(keys.STRAYS, rotation_id, json.dumps(asdict(stray)))
        return stray

    def all(self) -> list[Stray]:
        """Every stray credential, oldest first."""
        raw = self.client.hvals(keys.STRAYS)
        strays = [Stray(**json.loads(value)) for value in raw]
        return sorted(strays, key=lambda s: (s.since, s.path))

    def of(self, path: str) -> list[Stray]:
        """The stray credentials of ``path``."""
        return [stray for stray in self.all() if stray.path == path]

    def acknowledge(self, path: str) -> list[Stray]:
        """Forget the stray credentials of ``path`` (revoked by hand); returns them."""
        found = self.of(path)
        if found:
            self.client.hdel(keys.STRAYS, *[stray.rotation_id for stray in found])
        return found
