"""Target budgets: a Redis semaphore with leases per target, so at most ``max_concurrent``
rotations work on one system at once, whoever enqueued them.

Each target has a sorted set of holders (member: rotation id and phase, score: the slot's lease
expiry on Redis's ``TIME``): a slot whose holder was SIGKILLed comes back by itself once its
lease passes, as the run's own lease does. A run that finds every slot taken waits in the
target's waiters (oldest first) and in the due-queue, a short delay ahead; a released slot
wakes the oldest waiter at once by claiming its due entry, so the releasing worker hands it out.
An unlimited budget never reaches this module (the engine skips it: no Redis call at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.state import keys, scripts


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Wake:
    """A waiting run whose due entry was claimed for ``lease`` (ms): hand it to a worker now."""

    rotation_id: str
    lease: int


class Slots:
    """The concurrency slots of every target, in Redis (:func:`orchestrator.state.keys.slots`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = scripts.register(client, "slot_acquire")
        self._renew = scripts.register(client, "slot_renew")
        self._wait = scripts.register(client, "slot_wait")
        self._release = scripts.register(client, "slot_release")

    def acquire(
        self,
        target: str,
        limit: int,
        holder: str,
        lease_seconds: float,
        *,
        rotation_id: str,
        drop_due: bool = False,
        note_wait: bool = False,
    ) -> bool:
        """Take a slot of ``target`` for ``holder`` (renewed if it holds one); False when all
        ``limit`` are taken. Taking one ends ``rotation_id``'s wait; ``drop_due`` also removes
        its due entry (a run before grace is in the due-queue only while it waits);
        ``note_wait`` records the wait (``slot_wait``) on the run when none is free, in the
        same step (a held run's: an update would end its hold)."""
        run_keys = [keys.slots(target), keys.slot_waiters(target), keys.DUE, keys.run(rotation_id)]
        argv: list[str | int] = [holder, limit, _ms(lease_seconds), rotation_id, int(drop_due)]
        argv.append(target if note_wait else "")
        return bool(self._acquire(keys=run_keys, args=argv))

    def renew(self, target: str, holder: str, lease_seconds: float) -> bool:
        """Extend ``holder``'s slot; False when it holds none any more."""
        return bool(self._renew(keys=[keys.slots(target)], args=[holder, _ms(lease_seconds)]))

    def wait(
        self,
        target: str,
        limit: int,
        rotation_id: str,
        *,
        delay: float,
        growth: float,
        longest: float,
        claim_seconds: float,
    ) -> Wake | None:
        """Queue ``rotation_id`` as a waiter of ``target``, due again after ``delay`` seconds
        for the next ``limit`` in line (one more ``delay`` per ``limit`` waiters ahead, plus a
        quarter of the time waited up to ``growth``; at most ``longest``); a :class:`Wake` when
        a slot came free meanwhile (its due entry claimed for ``claim_seconds``: hand it out
        now)."""
        run_keys = [keys.slots(target), keys.slot_waiters(target), keys.DUE]
        argv: list[str | int] = [rotation_id, limit, _ms(delay), _ms(growth), _ms(claim_seconds)]
        argv.append(_ms(longest))
        status, when = self._wait(keys=run_keys, args=argv)
        return Wake(rotation_id, int(_s(when))) if _s(status) == "free" else None

    def release(self, target: str, holder: str, claim_seconds: float) -> Wake | None:
        """Give ``holder``'s slot back; the oldest waiter, if any, to hand out now (its due
        entry claimed for ``claim_seconds``)."""
        run_keys = [keys.slots(target), keys.slot_waiters(target), keys.DUE]
        woken = self._release(keys=run_keys, args=[holder, _ms(claim_seconds)])
        return None if not woken else Wake(_s(woken[0]), int(_s(woken[1])))

    def forget_wait(self, target: str, rotation_id: str) -> None:
        """Drop ``rotation_id`` from ``target``'s waiters (it goes on without a slot: its
        target has no limit any more)."""
        self.client.zrem(keys.slot_waiters(target), rotation_id)

    def holders(self, target: str) -> list[str]:
        """Who holds a slot of ``target`` now (leases not yet dropped included)."""
        return [_s(m) for m in self.client.zrange(keys.slots(target), 0, -1)]

    def waiters(self, target: str) -> list[str]:
        """Rotation ids waiting for a slot of ``target``, oldest first."""
        return [_s(m) for m in self.client.zrange(keys.slot_waiters(target), 0, -1)]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
