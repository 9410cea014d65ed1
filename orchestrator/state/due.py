"""The due-queue: rotations waiting for their grace period to end, in one Redis sorted set.

Members are rotation ids, scores the finalize time in integer milliseconds. Nothing waits in a
Celery ETA (with the Redis broker an unacked ETA task is redelivered after the visibility
timeout and sits in worker memory, kombu#337). The sweeper *claims* due entries with a lease: a
Lua script reading Redis ``TIME`` moves each due entry's score to ``now + lease``, so an entry
whose finalize task is lost comes back by itself once the lease passes. The finalize task
removes its entry only if the score still equals the lease it was given, so an entry that was
re-claimed or rescheduled meanwhile is left alone.
"""

from __future__ import annotations

from datetime import datetime

import redis

from orchestrator.state import keys

# KEYS[1]=due  ARGV[1]=lease_ms  ARGV[2]=limit  -> {member, lease_until_ms, ...}
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local lease_until = now + tonumber(ARGV[1])
local out = {}
for _, m in ipairs(items) do
  redis.call('ZADD', KEYS[1], 'XX', lease_until, m)
  out[#out + 1] = m
  out[#out + 1] = tostring(lease_until)
end
return out
"""

# KEYS[1]=due  ARGV[1]=member  ARGV[2]=lease_until_ms (as returned by CLAIM)
_COMPLETE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


def to_ms(when: datetime) -> int:
    """A timezone-aware time as integer epoch milliseconds (the queue's scores)."""
    return int(when.timestamp() * 1000)


class DueQueue:
    """The finalize due-queue in Redis (:data:`orchestrator.state.keys.DUE`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)

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
