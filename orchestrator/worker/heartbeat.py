"""Heartbeats from the work loops: a worker consumer bootstep and beat's scheduler tick.

Every ``ROTATOR_HEARTBEAT_INTERVAL`` seconds a beat (1) rewrites this process's heartbeat file
(the exec probe's evidence, :mod:`orchestrator.worker.liveness`), (2) refreshes its entry in the
Redis registry with the routing table it runs (:mod:`orchestrator.state.workers`), and (3) pets
systemd's watchdog when ``NOTIFY_SOCKET`` is set. The worker's beat is a timer of the consumer's
event loop, so a consumer that stops turning (wedged) stops beating even while the metrics thread
still answers; beat's comes from its scheduler's tick.

A consumer that lost its broker leaves its event loop, and Celery stops its steps with the timer,
for a connect-and-retry loop that lasts as long as the outage. While the consumer's thread is in
that loop a thread beats instead (:class:`ReconnectBeats`): the process is alive and doing what it
should, so a Redis outage alone never makes a supervisor restart it.

:func:`publish_routing` is how the worker says which routing table it runs: at start, and
again whenever it loads the file anew.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import bootsteps
from celery.beat import Scheduler

from orchestrator import connection
from orchestrator.log import get_logger
from orchestrator.routing import RoutingOrigin
from orchestrator.settings import Settings
from orchestrator.state.workers import Process, Role, Routing, WorkerRegistry
from orchestrator.worker import liveness

log = get_logger(__name__)

#: How many heartbeat intervals a registry entry outlives its last heartbeat.
TTL_INTERVALS = 6


class Pulse:
    """One process's heartbeat: its identity, the routing it runs, where the beats go."""

    def __init__(self, settings: Settings, role: Role, node: str = "") -> None:
        self.settings = settings
        self.process = Process(role=role, node=node)
        self.routing: Routing | None = None
        self.file = liveness.heartbeat_file(settings.rotator_heartbeat_dir, role, self.process.pid)
        self._registry: WorkerRegistry | None = None
        self._ready = False

    @property
    def registry(self) -> WorkerRegistry:
        if self._registry is None:
            client = connection.redis_client(
                self.settings.redis_url,
                master=self.settings.redis_sentinel_master,
                socket_connect_timeout=2.0,
                socket_timeout=2.0,
            )
            ttl = TTL_INTERVALS * self.settings.rotator_heartbeat_interval
            self._registry = WorkerRegistry(client, ttl=ttl)
        return self._registry

    def beat(self) -> None:
        """Show that the work loop turns: file, registry (best effort), systemd watchdog.
        Never raises: a heartbeat that cannot be written must not stop the loop it reports on."""
        try:
            liveness.write_heartbeat(self.file, self.process.node)
        except OSError as exc:
            log.warning("heartbeat_file_unwritable", path=str(self.file), reason=exc.strerror)
        try:
            self.registry.beat(self.process, self.routing)
        except redis.RedisError as exc:
            log.warning("heartbeat_unpublished", role=self.process.role, reason=type(exc).__name__)
        socket_path = self.settings.notify_socket
        if not self._ready:
            self._ready = True
            liveness.notify_systemd(socket_path, "READY=1")
        liveness.notify_systemd(socket_path, "WATCHDOG=1")

    def stop(self) -> None:
        """A clean stop: the file goes, and the registry forgets this process."""
        liveness.remove_heartbeat(self.file)
        with contextlib.suppress(redis.RedisError):  # else the entry expires by itself
            self.registry.forget(self.process)
        liveness.notify_systemd(self.settings.notify_socket, "STOPPING=1")


_pulse: Pulse | None = None
_routing: Routing | None = None


def publish_origin(origin: RoutingOrigin) -> None:
    """A :data:`orchestrator.worker.routing_reload.LISTENERS` entry: this process routes with
    the table read from ``origin`` now (at start and after each reload)."""
    loaded = origin.loaded_at.isoformat(timespec="seconds")
    _publish(Routing(origin.path, origin.sha256, loaded))


def publish_routing(path: Path, content: bytes | None = None) -> Routing:
    """Say which routing table this worker runs (``content``: the bytes it loaded, else the
    file's now); every later heartbeat carries it, and the registry has it at once."""
    return _publish(Routing.of(path, content) if content is not None else Routing.read(path))


def _publish(routing: Routing) -> Routing:
    global _routing
    _routing = routing
    if _pulse is not None:
        _pulse.routing = _routing
        _pulse.beat()
    log.info("routing_published", routing=_routing.path, sha256=_routing.sha256)
    return _routing


def _start(settings: Settings, role: Role, node: str) -> Pulse:
    global _pulse
    _pulse = Pulse(settings, role, node)
    _pulse.routing = _routing
    _pulse.beat()
    log.info("heartbeat_started", role=role, interval=settings.rotator_heartbeat_interval)
    return _pulse


class ReconnectBeats:
    """A thread that beats every ``interval`` while the ``with`` block runs (a broker connect
    and its retries), so the beats stop as soon as the consumer's thread leaves it."""

    def __init__(self, pulse: Pulse, interval: float) -> None:
        self.pulse = pulse
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconnect-heartbeat", daemon=True)

    def __enter__(self) -> ReconnectBeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.pulse.beat()


def _beating_while_connecting(ensure_connected: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap the consumer's ``ensure_connected`` (its connect-and-retry loop) in
    :class:`ReconnectBeats` once the process has beaten (a start without a broker stays unready)."""

    def wrapped(conn: Any) -> Any:
        if _pulse is None:
            return ensure_connected(conn)
        with ReconnectBeats(_pulse, _pulse.settings.rotator_heartbeat_interval):
            return ensure_connected(conn)

    return wrapped


class ConsumerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: a beat every interval from the consumer's event-loop timer, and from
    a thread while the consumer reconnects to the broker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None
        parent.ensure_connected = _beating_while_connecting(parent.ensure_connected)

    def start(self, parent: Any) -> None:
        from orchestrator.worker.app import settings

        pulse = _pulse or _start(settings, "worker", str(parent.hostname))
        interval = settings.rotator_heartbeat_interval
        self.timer_ref = parent.timer.call_repeatedly(interval, pulse.beat, priority=10)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        if _pulse is not None:
            _pulse.stop()


class HeartbeatScheduler(Scheduler):  # type: ignore[misc]
    """Celery beat's in-memory scheduler whose tick also beats (at least every interval)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_beat = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        from orchestrator.worker.app import settings

        pulse = _pulse or _start(settings, "beat", "beat")
        interval = settings.rotator_heartbeat_interval
        now = time.monotonic()
        if now - self._last_beat >= interval:
            self._last_beat = now
            pulse.beat()
        wait = float(super().tick(*args, **kwargs))
        return min(wait, max(0.0, self._last_beat + interval - time.monotonic()))

    def close(self) -> None:
        super().close()
        if _pulse is not None:
            _pulse.stop()
