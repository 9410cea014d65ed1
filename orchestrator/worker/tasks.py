"""The Celery tasks (contract names ``scaivault.*``): thin wrappers that call the engine.

Arguments are ids and paths only; tasks return nothing. Each worker process builds its own
:class:`~orchestrator.engine.core.Engine` on first use (after the prefork fork). A transient
failure becomes a Celery retry with a countdown of seconds (never hours); the attempt cap lives
in the run record, keyed on the rotation, not on the Celery task id.
"""

from __future__ import annotations

from typing import Any

from celery import Task, signals

from orchestrator.backoff import backoff
from orchestrator.engine.core import Engine
from orchestrator.engine.rollback import RollbackRequest
from orchestrator.errors import RetryLater, reason_of
from orchestrator.log import get_logger
from orchestrator.state import metrics
from orchestrator.state.messages import RotateRequest
from orchestrator.state.messages import Task as TaskName
from orchestrator.state.pending import PendingEvents
from orchestrator.state.slots import Wake
from orchestrator.worker import routing_reload
from orchestrator.worker.app import app, settings
from rotators.errors import TransientError

log = get_logger(__name__)
_engine: Engine | None = None


def engine() -> Engine:
    """This process's engine, built on first use, routing with the routing file as it is now
    (a changed, valid file is reloaded first: docs/operating.md#reloading-the-routing-file)."""
    global _engine
    table = routing_reload.current(settings.rotator_config)
    if _engine is None:
        _engine = Engine.from_settings(settings, routing=table, wake=_wake)
    return _engine


def _wake(woken: Wake) -> None:
    """A released target slot woke a waiting run: hand it to a worker now (its due entry is
    claimed, so a lost message comes back once the claim passes)."""
    finalize.apply_async(kwargs={"rotation_id": woken.rotation_id, "lease": woken.lease})


def _fresh_engine(**_: Any) -> None:
    global _engine
    _engine = None  # connections must not be shared across the fork


signals.worker_process_init.connect(_fresh_engine, weak=False)


def _retry_unrecorded(task: Task, exc: TransientError, **fields: Any) -> None:
    """Retry a transient failure that happened before a run record existed (bounded too)."""
    if task.request.retries >= settings.rotator_max_attempts:
        log.error("task_gave_up", task=task.name, reason=type(exc).__name__, **fields)
        return
    # Never longer than the backoff cap: a long countdown holds the message unacked (kombu#337).
    cap = settings.rotator_retry_backoff_max
    wait = backoff(task.request.retries + 1, base=2.0, cap=cap)
    raise task.retry(countdown=min(max(wait, exc.retry_after or 0.0), cap), max_retries=None)


@app.task(name=TaskName.ROTATE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def rotate(self: Task, **kwargs: Any) -> None:
    """Start (or merge into, or resume) the rotation of ``path``."""
    try:
        request = RotateRequest.from_kwargs(kwargs)
    except (ValueError, TypeError):
        log.error("rotate_malformed", names=sorted(kwargs))
        return
    if unknown := RotateRequest.unknown(kwargs):
        log.warning("rotate_unknown_arguments", path=request.path, names=unknown)
    try:
        engine().rotate(request, owner=str(self.request.id))  # settles the pending event
    except RetryLater as exc:  # the run record exists: retries and re-drives go by it now
        raise self.retry(countdown=exc.countdown, max_retries=None) from None
    except TransientError as exc:
        if self.request.retries >= settings.rotator_max_attempts:
            limit = settings.rotator_max_attempts
            engine().refuse(request, f"gave up after {limit} attempts to start: {reason_of(exc)}")
            _settle(request.event_id)
            return
        if request.event_id:  # its retry is a new message: the sweep must not re-publish meanwhile
            PendingEvents(engine().client).touch(request.event_id)
        _retry_unrecorded(self, exc, path=request.path, event_id=request.event_id)


def _settle(event_id: str | None) -> None:
    """The event has a run record or a recorded decision: it leaves the pending events."""
    if event_id:
        PendingEvents(engine().client).settle(event_id)


@app.task(name=TaskName.FINALIZE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def finalize(self: Task, rotation_id: str, lease: int | None = None, **extra: Any) -> None:
    """Finalize one rotation whose grace period is over, or drive one that waited for a target
    slot (``lease``: the due claim of the sweep or of the released slot that woke it)."""
    try:
        engine().finalize(rotation_id, owner=str(self.request.id), lease=lease)
    except RetryLater as exc:
        raise self.retry(countdown=exc.countdown, max_retries=None) from None
    except TransientError as exc:
        _retry_unrecorded(self, exc, rotation_id=rotation_id)


@app.task(name=TaskName.ROLLBACK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def rollback(
    self: Task, rotation_id: str, hold: str, actor: str | None = None, reason: str | None = None
) -> None:
    """Roll a rotation in grace back under the hold on-call took."""
    request = RollbackRequest(rotation_id=rotation_id, hold=hold, actor=actor, reason=reason)
    try:
        engine().rollback(request, owner=str(self.request.id))
    except RetryLater as exc:  # waits for a slot of its target, still held
        raise self.retry(countdown=exc.countdown, max_retries=None) from None


@app.task(name=TaskName.SWEEP)  # type: ignore[untyped-decorator]
def sweep() -> None:
    """Enqueue finalize tasks for due entries and re-drive runs whose worker died (the engine
    also publishes again the task messages of accepted events that were lost)."""
    claimed = engine().sweep()
    for rotation_id, lease in claimed.due:
        finalize.apply_async(kwargs={"rotation_id": rotation_id, "lease": lease})
    for record in claimed.redrive:
        if record.state == "finalizing":
            finalize.apply_async(kwargs={"rotation_id": record.rotation_id})
            continue
        request = RotateRequest(
            path=record.path,
            trigger=record.trigger,
            event_id=record.event_id,
            from_version=record.from_version,
            grace_period=record.grace_period,
            actor=record.actor,
            reason=record.reason,
            rotation_id=record.rotation_id,
        )
        rotate.apply_async(kwargs=request.to_kwargs())
    if claimed.due or claimed.redrive:
        log.info("sweep_done", finalize=len(claimed.due), redriven=len(claimed.redrive))
    metrics.record_sweep(engine().client)


@app.task(name=TaskName.RECONCILE, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def reconcile(self: Task) -> None:
    """Rebuild due-queue entries from ScaiVault metadata (after Redis data loss)."""
    try:
        engine().reconcile()
    except TransientError as exc:
        _retry_unrecorded(self, exc)
