"""The per-path audit trail: a capped Redis stream of non-secret facts that ``history`` shows.

Receiver, engine and CLI all append here; every entry is flat strings (a Redis stream's
fields), with the time ScaiVault-independent and in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from orchestrator.state import keys

#: Entries kept per path (approximate trim, as Redis streams do cheaply).
MAX_ENTRIES = 500

#: Fields an entry may carry; anything else is refused so a secret cannot slip in by name.
FIELDS = frozenset(
    {
        "event",
        "rotation_id",
        "event_id",
        "actor",
        "reason",
        "trigger",
        "rotator",
        "state",
        "step",
        "from_version",
        "new_version",
        "outcome",
        "detail",
        "duration_ms",
        "attempt",
        "sessions",
        "checks",
    }
)


def entry(event: str, **fields: Any) -> dict[str, str]:
    """Build one stream entry: ``event`` plus known non-empty fields, as strings."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"unknown history field(s): {sorted(unknown)}")
    out = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
    out.update({k: str(v) for k, v in fields.items() if v is not None and v != ""})
    return out


def append(client: redis.Redis, path: str, event: str, **fields: Any) -> None:
    """Append one entry to ``path``'s history, trimming it to about :data:`MAX_ENTRIES`."""
    pipe = client.pipeline(transaction=False)
    queue_entry(pipe, path, entry(event, **fields))
    pipe.execute()


def queue_entry(pipe: redis.client.Pipeline, path: str, built: dict[str, str]) -> None:
    """Queue :func:`append`'s write of an :func:`entry` built earlier (its ``ts`` is when it
    happened) on ``pipe`` (the caller executes it). The stream is kept from then on: one that
    only the receiver's events wrote to expires (``event_record.lua``)."""
    pipe.xadd(keys.history(path), built, maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
    pipe.persist(keys.history(path))


def read(client: redis.Redis, path: str, limit: int = 50) -> list[dict[str, str]]:
    """The newest ``limit`` entries of ``path``'s history, oldest first."""
    rows = client.xrevrange(keys.history(path), count=limit)
    out = []
    for _id, raw in reversed(rows):  # type: ignore[arg-type]
        out.append({_s(k): _s(v) for k, v in (raw or {}).items()})
    return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
