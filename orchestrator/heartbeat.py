"""A lease heartbeat: renews a run's lease in a thread while a worker drives it.

So only a dead worker's lease expires (and the sweeper re-drives that run).
"""

from __future__ import annotations

import threading

import redis

from orchestrator.store import LeaseLost, RunStore


class Heartbeat:
    """Renews ``rotation_id``'s lease every third of ``seconds`` until the block ends."""

    def __init__(self, store: RunStore, rotation_id: str, owner: str, seconds: float) -> None:
        self._store = store
        self._rotation_id = rotation_id
        self._owner = owner
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                self._store.renew_lease(self._rotation_id, self._owner, self._seconds)
            except LeaseLost:
                return  # the next state change fails with LeaseLost and stops the run
            except redis.RedisError:
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
