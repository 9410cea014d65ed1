"""A lease heartbeat: renews a run's lease in a thread while a worker drives it.

So only a dead worker's lease expires (and the sweeper re-drives that run). A worker whose
lease is lost (taken over, or not renewed within its length because Redis did not answer)
must not touch the target again: :meth:`LeaseGuard.check` before every rotator side effect.
"""

from __future__ import annotations

import threading
import time

import redis
import structlog

from orchestrator.store import LeaseLost, RunStore


class Heartbeat:
    """Renews ``rotation_id``'s lease every third of ``seconds`` until the block ends."""

    def __init__(
        self,
        store: RunStore,
        rotation_id: str,
        owner: str,
        seconds: float,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._store = store
        self._rotation_id = rotation_id
        self._owner = owner
        self._seconds = seconds
        self._log = log or structlog.get_logger("orchestrator.heartbeat")
        self._renewed = time.monotonic()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    @property
    def lost(self) -> bool:
        """True once the lease was taken over, or not renewed for its whole length."""
        if self._lost.is_set():
            return True
        return time.monotonic() - self._renewed >= self._seconds

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                self._store.renew_lease(self._rotation_id, self._owner, self._seconds)
                self._renewed = time.monotonic()
            except LeaseLost as exc:
                self._lost.set()
                self._log.warning(
                    "lease_lost", rotation_id=self._rotation_id, reason=type(exc).__name__
                )
                return
            except redis.RedisError as exc:
                self._log.warning(
                    "lease_renew_failed", rotation_id=self._rotation_id, reason=type(exc).__name__
                )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class LeaseGuard:
    """The heartbeat of the run this worker thread drives now; checked before side effects."""

    def __init__(self) -> None:
        self._local = threading.local()

    def watch(self, heartbeat: Heartbeat | None, deadline: float | None = None) -> None:
        """Guard with ``heartbeat`` (None: stop guarding); ``deadline`` (``time.monotonic``)
        is when this task must be done waiting so it ends within its time limit."""
        self._local.heartbeat = heartbeat
        self._local.deadline = deadline

    @property
    def deadline(self) -> float | None:
        """The task's deadline for waits (see :meth:`watch`), or None when unguarded."""
        value: float | None = getattr(self._local, "deadline", None)
        return value

    def check(self, rotation_id: str, step: str) -> None:
        """Raise :class:`LeaseLost` if this worker's lease on the run is lost."""
        heartbeat: Heartbeat | None = getattr(self._local, "heartbeat", None)
        if heartbeat is not None and heartbeat.lost:
            raise LeaseLost(
                f"rotation {rotation_id}: lease lost before {step}; not touching the target",
                rotation_id=rotation_id,
            )
