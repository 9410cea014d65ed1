"""The Celery tasks (contract names ``scaivault.*``): thin wrappers that call the engine.

Arguments are ids and paths only; tasks return nothing. Each worker process builds its own
:class:`~orchestrator.engine.core.Engine` on first use (after the prefork fork). A transient failure
becomes a Celery retry with a countdown of seconds (never hours); the attempt cap lives in the
run record, keyed on the rotation, not on the Celery task id.
"""

from __future__ import annotations

import random
from typing import Any

from celery import Task, signals

from orchestrator.engine.core import Engine, RotateRequest
from orchestrator.errors import RetryLater, reason_of
from orchestrator.log import get_logger
from orchestrator.state.pending import Ledger, give_up, sweep_pending
from orchestrator.worker.app import FINALIZE, RECONCILE, ROTATE, SWEEP, app, settings
from rotators.errors import TransientError

log = get_logger(__name__)
_engine: Engine | None = None


def engine() -> Engine:
    """This process's engine, built on first use."""
    global _engine
    if _engine is None:
        _engine = Engine.from_settings(settings)
    return _engine


def _fresh_engine(**_: Any) -> None:
    global _engine
    _engine = None  # connections must not be shared across the fork


signals.worker_process_init.connect(_fresh_engine, weak=False)


def _cap() -> float:
    return settings.rotator_retry_backoff_max


def _backoff(retries: int) -> float:
    return min(_cap(), 2.0 ** (retries + 1)) * random.uniform(0.5, 1.0)


def _retry_unrecorded(task: Task, exc: TransientError, **fields: Any) -> None:
    """Retry a transient failure that happened before a run record existed (bounded too)."""
    if task.request.retries >= settings.rotator_max_attempts:
        log.error("task_gave_up", task=task.name, reason=type(exc).__name__, **fields)
        return
    # Never longer than the backoff cap: a long countdown holds the message unacked (kombu#337).
    countdown = min(max(_backoff(task.request.retries), exc.retry_after or 0.0), _cap())
    raise task.retry(countdown=countdown, max_retries=None)


@app.task(name=ROTATE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def rotate(
    self: Task,
    path: str,
    trigger: str = "schedule",
    event_id: str | None = None,
    from_version: int | None = None,
    grace_period: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    rotation_id: str | None = None,
    **extra: Any,
) -> None:
    """Start (or merge into, or resume) the rotation of ``path``."""
    if extra:
        log.warning("rotate_unknown_arguments", path=path, names=sorted(extra))
    request = RotateRequest(
        path=path,
        trigger=trigger or "schedule",
        event_id=event_id,
        from_version=int(from_version) if from_version is not None else None,
        grace_period=grace_period,
        actor=actor,
        reason=reason,
        rotation_id=rotation_id,
    )
    try:
        engine().rotate(request, owner=str(self.request.id))  # settles the event's ledger entry
    except RetryLater as exc:  # the run record exists: retries and re-drives go by it now
        raise self.retry(countdown=exc.countdown, max_retries=None) from None
    except TransientError as exc:
        if self.request.retries >= settings.rotator_max_attempts:
            _lost(request, exc)
            return
        if event_id:  # its retry is a new message: the ledger must not re-publish meanwhile
            Ledger(engine().client).touch(event_id)
        _retry_unrecorded(self, exc, path=path, event_id=event_id)


def _settle(event_id: str | None) -> None:
    """The event has a run record or a recorded decision: it leaves the pending ledger."""
    if event_id:
        Ledger(engine().client).settle(event_id)


def _lost(request: RotateRequest, exc: TransientError) -> None:
    """Out of retries before a run record existed: a failed run, loud (metric, alert)."""
    limit = settings.rotator_max_attempts
    give_up(engine(), request, f"gave up after {limit} attempts to start: {reason_of(exc)}")
    _settle(request.event_id)


@app.task(name=FINALIZE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def finalize(self: Task, rotation_id: str, lease: int | None = None, **extra: Any) -> None:
    """Finalize one rotation whose grace period is over (``lease``: the sweeper's due claim)."""
    try:
        engine().finalize(rotation_id, owner=str(self.request.id), lease=lease)
    except RetryLater as exc:
        raise self.retry(countdown=exc.countdown, max_retries=None) from None
    except TransientError as exc:
        _retry_unrecorded(self, exc, rotation_id=rotation_id)


@app.task(name=SWEEP)  # type: ignore[untyped-decorator]
def sweep() -> None:
    """Enqueue finalize tasks for due entries and re-drive runs whose worker died."""
    claimed = engine().sweep()
    for rotation_id, lease in claimed.due:
        finalize.apply_async(kwargs={"rotation_id": rotation_id, "lease": lease})
    for record in claimed.redrive:
        if record.state == "finalizing":
            finalize.apply_async(kwargs={"rotation_id": record.rotation_id})
            continue
        rotate.apply_async(
            kwargs={
                "path": record.path,
                "trigger": record.trigger,
                "event_id": record.event_id,
                "from_version": record.from_version,
                "grace_period": record.grace_period,
                "actor": record.actor,
                "reason": record.reason,
                "rotation_id": record.rotation_id,
            }
        )
    if claimed.due or claimed.redrive:
        log.info("sweep_done", finalize=len(claimed.due), redriven=len(claimed.redrive))
    sweep_pending(engine(), Ledger(engine().client))  # accepted events whose message was lost


@app.task(name=RECONCILE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def reconcile(self: Task) -> None:
    """Rebuild due-queue entries from ScaiVault metadata (after Redis data loss)."""
    try:
        engine().reconcile()
    except TransientError as exc:
        _retry_unrecorded(self, exc)
