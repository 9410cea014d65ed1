"""A lease heartbeat: renews a run's lease from a background thread while a worker drives it.

So only a dead worker's lease expires (and the sweeper re-drives that run). A worker whose
lease is lost (taken over, or not renewed within its length because Redis did not answer)
must not touch the target again: :meth:`LeaseGuard.check` before every rotator side effect.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

import redis
import structlog

from orchestrator.errors import LeaseLost
from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore

_STARTING = threading.Lock()


def _fresh_lock_in_child() -> None:  # a thread of the parent may have held it at the fork
    global _STARTING
    _STARTING = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


class LeaseKeeper:
    """The one thread of a process that renews the leases its tasks hold (see :class:`Heartbeat`).

    Started on first use, and again in a forked child (a thread does not survive a fork). One
    long-lived thread instead of one per rotation: starting and joining a thread for every run
    cost more CPU than the rest of a short rotation's bookkeeping together. The thread is woken
    only when a new lease is due before it would wake anyway, not for every rotation.
    """

    def __init__(self) -> None:
        self._held: dict[int, Heartbeat] = {}
        self._cond = threading.Condition()
        self._wake_at = math.inf  # when the thread wakes by itself (``time.monotonic``)
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def hold(self, beat: Heartbeat) -> None:
        """Renew ``beat``'s lease from now on, every third of its length."""
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self._start()  # first use, a forked child, or (a bug) the thread died
        with self._cond:
            self._held[id(beat)] = beat
            if beat.next_renewal < self._wake_at:
                self._cond.notify()

    def release(self, beat: Heartbeat) -> None:
        """Stop renewing ``beat``'s lease (a renewal already under way finishes)."""
        with self._cond:
            self._held.pop(id(beat), None)

    def close(self) -> None:
        """Stop the thread (the engine closes); leases still held are no longer renewed."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _start(self) -> None:
        with _STARTING:
            alive = self._thread is not None and self._thread.is_alive()
            if self._pid == os.getpid() and alive:
                return
            if self._pid != os.getpid():  # a forked child: the parent's leases are not ours
                self._held, self._cond = {}, threading.Condition()
            self._wake_at, self._closed = math.inf, False
            self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def _run(self) -> None:
        cond = self._cond
        while not self._closed:
            with cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [beat for beat in self._held.values() if beat.next_renewal <= now]
                if not due:
                    soonest = min((b.next_renewal for b in self._held.values()), default=math.inf)
                    self._wake_at = soonest
                    cond.wait(None if soonest == math.inf else soonest - now)
                    continue
                self._wake_at = now  # awake: it looks at every held lease again next
            for beat in due:  # outside the lock: a renewal is a Redis round trip
                try:
                    beat.renew()
                except Exception as exc:  # the thread serves every lease: it must not die
                    beat.fail(exc)


class Heartbeat:
    """Keeps ``rotation_id``'s lease for ``owner`` while the block runs: ``keeper`` renews it
    every third of ``seconds``."""

    def __init__(
        self,
        store: RunStore,
        rotation_id: str,
        owner: str,
        seconds: float,
        keeper: LeaseKeeper,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._store = store
        self._rotation_id = rotation_id
        self._owner = owner
        self._seconds = seconds
        self._log = log or structlog.get_logger("orchestrator.engine.lease")
        self._keeper = keeper
        self._renewed = time.monotonic()
        self._next = self._renewed + seconds / 3
        self._lost = threading.Event()
        self._held = False
        self._also: list[Callable[[], None]] = []

    def also(self, renew: Callable[[], None]) -> None:
        """Call ``renew`` after each renewal of the run's lease (a target slot's lease)."""
        self._also.append(renew)

    @property
    def lost(self) -> bool:
        """True once the lease was taken over, or not renewed for its whole length."""
        if self._lost.is_set():
            return True
        return time.monotonic() - self._renewed >= self._seconds

    @property
    def next_renewal(self) -> float:
        """When (``time.monotonic``) the lease is renewed next; never again once lost."""
        return math.inf if self._lost.is_set() else self._next

    def renew(self) -> None:
        """Renew the lease now (the keeper's thread calls this); a failure is retried a third
        of the lease later, a lease taken over is lost for good."""
        try:
            self._store.renew_lease(self._rotation_id, self._owner, self._seconds)
            self._renewed = time.monotonic()
            for renew in self._also:
                renew()
        except LeaseLost as exc:
            if self._held:  # not when the run moved on (grace, done) as the block ended
                self._lost.set()
                self._log.warning(
                    "lease_lost", rotation_id=self._rotation_id, reason=type(exc).__name__
                )
        except redis.RedisError as exc:
            self._log.warning(
                "lease_renew_failed", rotation_id=self._rotation_id, reason=type(exc).__name__
            )
        self._next = time.monotonic() + self._seconds / 3

    def fail(self, exc: BaseException) -> None:
        """An unexpected error renewing: the lease counts as lost (its worker stops)."""
        self._lost.set()
        self._log.error(
            "lease_renew_failed", rotation_id=self._rotation_id, reason=type(exc).__name__
        )

    def __enter__(self) -> Heartbeat:
        self._held = True
        self._keeper.hold(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._held = False
        self._keeper.release(self)


class LeaseGuard:
    """The heartbeat of the run this worker thread drives now; checked before side effects."""

    def __init__(self) -> None:
        self._local = threading.local()

    def watch(
        self,
        heartbeat: Heartbeat | None,
        deadline: float | None = None,
        run: tuple[RunRecord, str] | None = None,
    ) -> None:
        """Guard with ``heartbeat`` (None: stop guarding); ``deadline`` (``time.monotonic``)
        is when this task must be done waiting so it ends within its time limit; ``run`` is
        the run this thread drives and its lease owner."""
        self._local.heartbeat = heartbeat
        self._local.deadline = deadline
        self._local.run = run

    @property
    def run(self) -> tuple[RunRecord, str] | None:
        """The run this thread drives now and its lease owner, or None."""
        value: tuple[RunRecord, str] | None = getattr(self._local, "run", None)
        return value

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
