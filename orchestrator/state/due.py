"""The due-queue: rotations waiting for their grace period to end, in one Redis sorted set.

Members are rotation ids, scores the finalize time in integer milliseconds. Nothing waits in a
Celery ETA (with the Redis broker an unacked ETA task is redelivered after the visibility
timeout and sits in worker memory, kombu#337). The sweeper *claims* due entries with a lease:
``lua/due_claim.lua``, on Redis's ``TIME``, moves each due entry's score to ``now + lease``, so an
entry whose finalize task is lost comes back by itself once the lease passes. The finalize task
removes its entry only if the score still equals the lease it was given, so an entry that was
re-claimed or rescheduled meanwhile is left alone.
"""

from __future__ import annotations

from datetime import datetime

import redis

from orchestrator.state import keys, scripts


def to_ms(when: datetime) -> int:
    """A timezone-aware time as integer epoch milliseconds (the queue's scores)."""
    return int(when.timestamp() * 1000)


class DueQueue:
    """The finalize due-queue in Redis (:data:`orchestrator.state.keys.DUE`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claim = scripts.register(client, "due_claim")
        self._complete = scripts.register(client, "due_complete")

    def schedule(self, rotation_id: str, due_ms: int, *, replace: bool = False) -> bool:
        """Add ``rotation_id`` due at ``due_ms``; an existing entry is kept unless ``replace``.

        Returns True when the entry was added or changed.
        """
        if replace:
            return bool(self.client.zadd(keys.DUE, {rotation_id: due_ms}, ch=True))
        return bool(self.client.zadd(keys.DUE, {rotation_id: due_ms}, nx=True))

    def claim(self, lease_ms: int, limit: int = 200) -> list[tuple[str, int]]:
        """Claim up to ``limit`` due entries for ``lease_ms``: ``[(rotation_id, lease), ...]``.

        Atomic, so concurrent sweepers claim disjoint entries.
        """
        flat = self._claim(keys=[keys.DUE], args=[lease_ms, limit])
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return [(items[i], int(float(items[i + 1]))) for i in range(0, len(items), 2)]

    def complete(self, rotation_id: str, lease: int) -> bool:
        """Remove the entry only if its score still equals ``lease``; True if removed."""
        return bool(self._complete(keys=[keys.DUE], args=[rotation_id, lease]))

    def remove(self, rotation_id: str) -> None:
        """Remove the entry unconditionally (the rotation ended another way)."""
        self.client.zrem(keys.DUE, rotation_id)

    def score(self, rotation_id: str) -> int | None:
        """The entry's due time (or current lease) in ms, or None if it is not queued."""
        value = self.client.zscore(keys.DUE, rotation_id)
        return None if value is None else int(value)

    def pending(self) -> int:
        """How many rotations wait to finalize."""
        return int(self.client.zcard(keys.DUE))
