"""Keeps a worker's routing table in step with its routing file
(docs/operating.md#reloading-the-routing-file).

Every process that runs tasks checks the file before each task (a ``stat``; the file is read
and hashed only when that changed), so whatever routes a task routes it with the file as it is
now: in a prefork worker that is each pool process, whatever the main process did. The main
process also checks on a timer (:data:`POLL_SECONDS`), reading the file whatever its ``stat``
after a ``SIGHUP`` (``systemctl reload``), so a change is validated, logged and announced
without waiting for a task. Celery's own ``SIGHUP`` (restart the whole worker, which then
refuses to start on a bad file) is replaced.

A new file is validated first, as at start (plugins loaded, options checked). When it is
invalid the table in use is kept and every problem is logged at error level
(``routing_reload_rejected``), once per content of the file in each process. Each table a
process starts to route with is announced through :func:`announce` ("this process now runs
routing file X with sha256 H loaded at T") to the :data:`LISTENERS`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.log import get_logger
from orchestrator.routing import RoutingOrigin, RoutingTable

log = get_logger(__name__)

#: Seconds between two checks of the routing file by a worker's main process.
POLL_SECONDS = 2.0

#: Called with the origin of every table a process starts to route with (at start and after
#: each reload), in that process. A heartbeat registry recording which routing file each live
#: process runs registers itself here; a failing listener is logged, never raised.
LISTENERS: list[Callable[[RoutingOrigin], None]] = []


def announce(origin: RoutingOrigin) -> None:
    """Tell every listener that this process now routes with the table of ``origin``."""
    for listener in list(LISTENERS):
        try:
            listener(origin)
        except Exception as exc:  # a listener must never stop routing
            error = type(exc).__name__
            log.warning("routing_announce_failed", listener=repr(listener), error=error)


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file is replaced or rewritten (``None``: it cannot be read).
    ``os.stat`` follows symlinks, so a Kubernetes ConfigMap's atomic swap shows."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class RoutingReloader:
    """One process's routing table (:attr:`table`, the same object for the process's life)
    and the file it follows."""

    def __init__(self, path: Path, table: RoutingTable) -> None:
        self.path = path
        self.table = table
        self._stamp = _stamp(path)
        self._rejected: str | None = None  # sha256 of the last invalid content logged
        self._lock = threading.Lock()
        self.requested = False  # set by SIGHUP: check now, even if the file looks unchanged

    @classmethod
    def load(cls, path: Path) -> RoutingReloader:
        """Load and validate ``path`` (raises ConfigError, as a worker start does); announce."""
        reloader = cls(path, RoutingTable.load(path))
        reloader._loaded(trigger="start", previous=None)
        return reloader

    def refresh(self, *, force: bool = False, trigger: str = "change") -> bool:
        """Reload the table if the file changed; return whether it did.

        ``force`` reads and hashes the file even when its ``stat`` looks the same.
        """
        with self._lock:
            stamp = _stamp(self.path)
            if stamp == self._stamp and not force:
                return False
            self._stamp = stamp
            return self._reload(trigger)

    def _reload(self, trigger: str) -> bool:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            log.warning("routing_unreadable", routing=str(self.path), error=exc.strerror,
                        trigger=trigger, kept=self._sha())  # fmt: skip
            return False
        current = self.table.origin
        fresh = RoutingOrigin.of(self.path, data)
        if current is not None and fresh.sha256 == current.sha256:
            if trigger == "sighup":
                log.info("routing_unchanged", routing=str(self.path), sha256=fresh.sha256)
            return False
        try:
            table = RoutingTable.from_bytes(self.path, data)
        except ConfigError as exc:
            self._reject(fresh, exc, trigger)
            return False
        self.table.adopt(table)
        self._rejected = None
        self._loaded(trigger, previous=current)
        return True

    def _reject(self, fresh: RoutingOrigin, exc: ConfigError, trigger: str) -> None:
        """Log every problem of an invalid new file, once per content; keep the table."""
        if self._rejected == fresh.sha256:
            return
        self._rejected = fresh.sha256
        for problem in exc.problems:
            log.error("routing_reload_problem", routing=str(self.path), sha256=fresh.sha256,
                      problem=problem)  # fmt: skip
        log.error(
            "routing_reload_rejected",
            routing=str(self.path),
            sha256=fresh.sha256,
            problems=len(exc.problems),
            kept=self._sha(),
            trigger=trigger,
        )

    def _loaded(self, trigger: str, previous: RoutingOrigin | None) -> None:
        origin = self.table.origin
        if origin is None:
            return
        log.info(
            "routing_loaded" if previous is None else "routing_reloaded",
            routing=origin.path,
            sha256=origin.sha256,
            rules=len(self.table.rules),
            previous=previous.sha256 if previous else None,
            trigger=trigger,
            pid=os.getpid(),
        )
        announce(origin)

    def _sha(self) -> str | None:
        return self.table.origin.sha256 if self.table.origin else None

    def poll(self) -> None:
        """The main process's timer: check the file (read it whatever its ``stat`` after a
        SIGHUP)."""
        forced, self.requested = self.requested, False
        self.refresh(force=forced, trigger="sighup" if forced else "change")

    def on_sighup(self, _signum: int = signal.SIGHUP, _frame: FrameType | None = None) -> None:
        """SIGHUP: read the file at the next tick of the timer (a signal handler must not
        take the lock a check in progress holds)."""
        self.requested = True

    def after_fork(self) -> None:
        """In a forked pool process: a lock the parent held at the fork would never open."""
        self._lock = threading.Lock()


_process: RoutingReloader | None = None


def _after_fork() -> None:
    if _process is not None:
        _process.after_fork()


os.register_at_fork(after_in_child=_after_fork)


def install(path: Path, table: RoutingTable) -> RoutingReloader:
    """Make ``table`` (already loaded from ``path`` and validated) this process's table."""
    global _process
    _process = RoutingReloader(path, table)
    _process._loaded(trigger="start", previous=None)
    return _process


def current(path: Path) -> RoutingTable:
    """This process's table, checked against its file first (loaded on first use)."""
    global _process
    if _process is None or _process.path != path:
        _process = RoutingReloader.load(path)
    else:
        _process.refresh()
    return _process.table


def watch(timer: Any, path: Path) -> RoutingReloader | None:
    """In a worker's main process: check the file every :data:`POLL_SECONDS` on Celery's
    ``timer`` and at once on SIGHUP (replacing Celery's restart-on-SIGHUP)."""
    reloader = _process if _process is not None and _process.path == path else None
    if reloader is None:
        return None
    timer.call_repeatedly(POLL_SECONDS, reloader.poll)
    try:
        signal.signal(signal.SIGHUP, reloader.on_sighup)
    except ValueError:  # not the main thread: the timer still follows the file
        log.warning("routing_sighup_unavailable", routing=str(path))
    log.info("routing_watched", routing=str(path), every_s=POLL_SECONDS)
    return reloader
