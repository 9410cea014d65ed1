"""The Celery application of the worker and beat (``celery -A orchestrator.worker.app worker``).

Configured from :class:`~orchestrator.settings.Settings` at import, following
docs/architecture.md#tasks-and-redis: JSON only, no result backend, late acks with requeue when a
pool process dies, prefetch 1, one visibility timeout set in all three places and well above the
task time limit. Long waits (grace periods) never become ETAs: beat runs ``sweep`` every
``ROTATOR_SWEEP_INTERVAL`` seconds and ``reconcile`` every ``ROTATOR_RECONCILE_INTERVAL``.

The broker goes through :mod:`orchestrator.worker.broker`: kombu's Redis transports with a
workaround so that a worker survives a Redis restart. At worker start (main process) the plugins
and the routing file are validated, and the worker refuses to start (exit 2, every problem
reported) when they are invalid or its metrics port is taken; the Prometheus endpoint and, when
``OTEL_*`` asks for it, tracing start there too. From then on the routing file is followed
(:mod:`orchestrator.worker.routing_reload`): a valid change is picked up without a restart, an
invalid one is refused and the table in use kept. Logging goes through :mod:`orchestrator.log`
from the worker's first line (JSON only in JSON mode), not Celery's own setup. Task events are
on for Flower (``ROTATOR_TASK_EVENTS``); the consumer and beat's scheduler beat from their work
loops (:mod:`orchestrator.worker.heartbeat`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Celery, signals
from kombu.entity import Exchange, Queue

from orchestrator import connection, tracing
from orchestrator.errors import ConfigError
from orchestrator.log import configure_logging, get_logger, say_as_log
from orchestrator.settings import Settings
from orchestrator.state import keys
from orchestrator.state.messages import Task
from orchestrator.worker import broker, heartbeat, routing_reload

if TYPE_CHECKING:
    from orchestrator.routing import RoutingTable

log = get_logger(__name__)


def _queue() -> Queue:
    """Our one queue, bound to the anonymous exchange (routing by queue name)."""
    return Queue(keys.TASK_QUEUE, Exchange(""), routing_key=keys.TASK_QUEUE)  # type: ignore[no-untyped-call]


def configuration(settings: Settings) -> dict[str, Any]:
    """The Celery settings for ``settings``; raises ConfigError when they cannot be safe."""
    limit = settings.rotator_task_time_limit
    vt = settings.rotator_visibility_timeout
    if vt < 2 * limit:
        raise ConfigError(
            f"ROTATOR_VISIBILITY_TIMEOUT ({vt}s) must be at least twice ROTATOR_TASK_TIME_LIMIT "
            f"({limit}s), or running tasks are redelivered to a second worker"
        )
    sweep = settings.rotator_sweep_interval
    reconcile = settings.rotator_reconcile_interval
    transport = connection.broker_settings(
        settings.redis_url,
        master=settings.redis_sentinel_master,
        transport_options={
            "visibility_timeout": vt,
            # kombu >= 5.7: look for messages of a SIGKILLed worker every 10 s, not every
            # 10 x 10 s, so they come back about a visibility timeout after it died.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
    )
    return transport | {
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Task events (args are ids and paths only) let Flower and `celery events` watch live.
        "worker_send_task_events": settings.rotator_task_events,
        "task_send_sent_event": settings.rotator_task_events,
        "broker_connection_retry_on_startup": True,
        # The anonymous exchange routes by queue name alone, so publishing does not depend on
        # kombu's ``_kombu.binding.*`` keys, which a Redis flush or data loss would remove.
        "task_queues": (_queue(),),
        "task_default_queue": keys.TASK_QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": keys.TASK_QUEUE,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # In memory (nothing to persist but intervals); its tick also beats (worker/heartbeat.py).
        "beat_scheduler": "orchestrator.worker.heartbeat:HeartbeatScheduler",
        "beat_schedule": {
            "sweep": {
                "task": Task.SWEEP,
                "schedule": sweep,
                "options": {"expires": max(2 * sweep, 5)},
            },
            "reconcile": {
                "task": Task.RECONCILE,
                "schedule": reconcile,
                "options": {"expires": max(reconcile / 2, 5)},
            },
        },
    }


broker.install()
settings = Settings.load()
app = Celery("scaivault-rotator", include=["orchestrator.worker.tasks"], set_as_current=True)
app.conf.update(configuration(settings))
app.steps["consumer"].add(heartbeat.ConsumerHeartbeat)


def check_worker_config(current: Settings) -> RoutingTable:
    """Load the plugins and the routing file as a worker would; raise ConfigError if invalid."""
    from orchestrator.routing import RoutingTable

    table = RoutingTable.load(current.rotator_config)
    if any(r.capabilities.in_place for r in table.rotators.values()):
        current.require_seal_keys()
    return table


def refuse(exc: ConfigError) -> NoReturn:
    """Report every problem and exit 2 (the worker must not start on a bad configuration):
    one ``startup_refused`` log line in JSON mode, else a readable list on stderr."""
    if settings.rotator_log_format == "json":
        _configure_logging()
        log.error("startup_refused", reason="refusing to start", problems=exc.problems)
    else:
        print("scaivault-rotator: refusing to start: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(2)


def _configure_logging(**_: Any) -> None:
    """Our logging instead of Celery's (``setup_logging``: Celery then leaves logging alone)."""
    configure_logging(settings.rotator_log_level, settings.rotator_log_format)


signals.setup_logging.connect(_configure_logging, weak=False)


def _worker_starting(instance: Any = None, **_: Any) -> None:
    """``celeryd_init``, the first thing a worker does: log from the first line on, and in JSON
    mode nothing but JSON (no banner; Celery's shutdown notices written as log lines)."""
    _configure_logging()
    if settings.rotator_log_format == "json":
        if instance is not None:
            instance.quiet = True
        import celery.apps.worker

        celery.apps.worker.safe_say = say_as_log


signals.celeryd_init.connect(_worker_starting, weak=False)


def _worker_init(**_: Any) -> None:
    """Main process: validate the routing file and start the metrics endpoint, or refuse.

    Celery logs and swallows an exception of a ``worker_init`` handler, so every failure here
    ends the process itself.
    """
    try:
        table = check_worker_config(settings)
        _start_metrics(lambda: table.rotators)  # the table a reload updates
    except ConfigError as exc:
        refuse(exc)
    # The pool processes inherit the table; each table a process routes with is published to
    # the heartbeat registry (check-config shows which routing file each live worker runs).
    routing_reload.LISTENERS.append(heartbeat.publish_origin)
    routing_reload.install(settings.rotator_config, table)
    # Before the pool forks: the children inherit the tracer (its exporter thread restarts).
    if tracing.configure("worker"):
        tracing.instrument_celery()
    log.info("worker_configured", routing=str(settings.rotator_config), queue=keys.TASK_QUEUE)


def _start_metrics(rotators: Callable[[], Iterable[str]]) -> None:
    from orchestrator.engine.core import REDIS_TIMEOUTS
    from orchestrator.state.metrics import start_metrics_server

    client = connection.redis_client(
        settings.redis_url, master=settings.redis_sentinel_master, **REDIS_TIMEOUTS
    )
    process_ttl = heartbeat.TTL_INTERVALS * settings.rotator_heartbeat_interval
    start_metrics_server(settings, client, rotators=rotators, process_ttl=process_ttl)


signals.worker_init.connect(_worker_init, weak=False)


def _worker_ready(sender: Any = None, **_: Any) -> None:
    """Follow the routing file from the main process (a timer, and SIGHUP)."""
    timer = getattr(sender, "timer", None)
    if timer is not None:
        routing_reload.watch(timer, settings.rotator_config)


signals.worker_ready.connect(_worker_ready, weak=False)


def _beat_starting(**_: Any) -> None:
    """``beat_init``: beat's published tasks (sweep, reconcile) start traces when tracing is on."""
    if tracing.configure("beat"):
        tracing.instrument_celery()


signals.beat_init.connect(_beat_starting, weak=False)
