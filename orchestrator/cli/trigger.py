"""Starting rotations by hand and watching them: ``rotate``, ``rotate --prefix``, ``retry``.

Rotations are started by publishing the contract task ``scaivault.rotate`` by name
(docs/architecture.md#tasks-and-redis) with ids and paths only, each with an entry in the pending
events (:mod:`orchestrator.state.pending`: the sweep publishes a lost message again, as for a
webhook), or by asking ScaiVault to fire ``rotation.due`` so the signed webhook path is used.
The worker's engine creates and drives the run; this module finds that run and follows it through
the run store and the path's history stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator.cli.output import render_entry, render_step
from orchestrator.cli.session import (
    POLL_SECONDS,
    OnCall,
    current_version,
    ensure_idle,
    refuse_unless_allowed,
    rule_for,
)
from orchestrator.cli.situation import RETRYABLE
from orchestrator.engine.ids import manual_id
from orchestrator.errors import CommandError
from orchestrator.state import history, keys
from orchestrator.state.messages import RotateRequest, Task
from orchestrator.state.pending import manual_event_id, queue_publish
from orchestrator.state.records import TERMINAL, RunRecord, RunState

#: States at which ``rotate --wait`` stops watching.
STOP_STATES = TERMINAL | {RunState.GRACE, RunState.NEEDS_ATTENTION}
#: Of those, the ones that mean the rotation worked (so far).
GOOD_STATES = frozenset({"grace", "done"})
#: Rotations published per Redis transaction by :func:`publish_manual`.
PUBLISH_CHUNK = 500


@dataclass(frozen=True)
class Request:
    """A rotation asked for: where, from which version, the run that was latest before, and
    the id its run will have (known when the CLI published the task itself)."""

    path: str
    from_version: int
    before: str | None
    via: str
    requested_at: float
    rotation_id: str | None = None


def enqueue_rotate(oc: OnCall, request: RotateRequest) -> str:
    """Publish ``scaivault.rotate`` for ``request`` (ids and paths only; a ``rotation_id``
    resumes that run rather than starting one); returns the task id."""
    kwargs = request.to_kwargs()
    sent = oc.producer.send_task(Task.ROTATE, kwargs=kwargs, queue=keys.TASK_QUEUE, retry=False)
    return str(sent.id)


def request_rotation(
    oc: OnCall,
    path: str,
    *,
    grace: str | None,
    reason: str | None,
    actor: str,
    via_vault: bool,
) -> Request:
    """Start a manual rotation of ``path``: check it, record who and why, then enqueue it."""
    rule_for(oc, path)
    ensure_idle(oc, path)
    version = current_version(oc, path)
    before = oc.store.last(path)
    via = "scaivault" if via_vault else "queue"
    rotation_id = None
    if via_vault:
        oc.vault.rotate(path)
        history.append(
            oc.redis, path, "rotation_requested", actor=actor, reason=reason, trigger="manual",
            from_version=version, detail="via ScaiVault POST /rotate",
        )  # fmt: skip
    else:
        request = manual_request(path, version, grace=grace, reason=reason, actor=actor)
        rotation_id = publish_manual(oc, [request])[0]
    before_id = before.rotation_id if before else None
    return Request(path, version, before_id, via, time.time(), rotation_id)


def manual_request(
    path: str,
    version: int | None,
    *,
    grace: str | None,
    reason: str | None,
    actor: str,
    max_concurrent: int | None = None,
) -> RotateRequest:
    """An on-call's rotate request, under a fresh manual event id (its ledger entry)."""
    return RotateRequest(
        path, "manual", event_id=manual_event_id(), from_version=version, grace_period=grace,
        actor=actor, reason=reason, max_concurrent=max_concurrent,
    )  # fmt: skip


class PublishInterrupted(Exception):
    """Ctrl-C while a wave was being queued: ``queued`` were (each chunk is one transaction:
    all of it or none), and one more chunk of ``chunk`` may have been."""

    def __init__(self, queued: int, chunk: int) -> None:
        super().__init__(f"interrupted after queueing {queued}")
        self.queued = queued
        self.chunk = chunk


def publish_manual(oc: OnCall, requests: list[RotateRequest]) -> list[str]:
    """Publish ``requests`` with their ledger entries and ``rotation_requested`` history
    entries, :data:`PUBLISH_CHUNK` per transaction; returns the rotation ids their runs get
    (derived from the event ids, however often the sweep publishes them again). Ctrl-C raises
    :class:`PublishInterrupted`, saying how many were queued."""
    queued = 0
    try:
        for start in range(0, len(requests), PUBLISH_CHUNK):
            chunk = requests[start : start + PUBLISH_CHUNK]
            pipe = oc.redis.pipeline(transaction=True)
            for request in chunk:
                note = history.entry(
                    "rotation_requested", actor=request.actor, reason=request.reason,
                    trigger="manual", from_version=request.from_version,
                    event_id=request.event_id, detail="enqueued by the CLI",
                )  # fmt: skip
                history.queue_entry(pipe, request.path, note)
                queue_publish(pipe, request)
            pipe.execute()
            queued += len(chunk)
    except KeyboardInterrupt:
        raise PublishInterrupted(queued, min(PUBLISH_CHUNK, len(requests) - queued)) from None
    return [manual_id(request.path, request.event_id) for request in requests]


def describe_rule(oc: OnCall, path: str) -> str | None:
    """``rule 2 ('apps/*') of rotation.toml``: the rule of the CLI's routing file for ``path``."""
    rule = oc.routing.match(path)
    if rule is None:
        return None
    return f"rule {oc.routing.number(rule)} ({rule.match!r}) of {oc.settings.rotator_config}"


def run_of(oc: OnCall, request: Request) -> RunRecord | None:
    """The run ``request`` started (even if it was only a decision), or the path's last run
    when its id is not known (a rotation ScaiVault was asked to fire)."""
    if request.rotation_id is not None:
        return oc.store.get(request.rotation_id)
    return oc.store.last(request.path)


def find_new_run(oc: OnCall, request: Request, timeout: float) -> RunRecord:
    """The run the request started, once a worker has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = run_of(oc, request)
        if record is not None and record.rotation_id != request.before:
            return record
        time.sleep(POLL_SECONDS)
    raise CommandError(
        f"no worker picked up the rotation of {request.path!r} within {timeout:.0f}s",
        hint="is a worker running against this Redis (`scaivault-rotator worker`)? "
        + ("Is the receiver subscribed in ScaiVault? " if request.via == "scaivault" else "")
        + f"Then check `status {request.path}`",
    )


def follow(
    oc: OnCall,
    rotation_id: str,
    timeout: float,
    show: Callable[[str], None],
    stop: Iterable[str] = STOP_STATES,
    tick: Callable[[str], None] | None = None,
) -> RunRecord:
    """Watch a run until it reaches a state in ``stop``, showing its steps and state changes.

    ``tick`` (if given) hears the current state on every poll, for a live status line.
    """
    stop_states = frozenset(stop)
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, ...]] = set()
    while True:
        record = oc.store.require(rotation_id)
        for entry in history.read(oc.redis, record.path, limit=100):
            key = (entry.get("ts", ""), entry.get("event", ""), entry.get("step", ""))
            if entry.get("rotation_id") == rotation_id and key not in seen:
                seen.add(key)
                show(render_entry(record.path, entry))
        marker = ("state", record.state, str(record.attempts), record.last_error or "")
        if marker not in seen:
            seen.add(marker)
            show(render_step(record.to_dict()))
        if record.state in stop_states:
            return record
        if tick is not None:
            tick(f"{record.state} (step {record.step or '-'}, attempt {record.attempts})")
        if time.monotonic() >= deadline:
            raise CommandError(
                f"rotation {rotation_id} is still {record.state} after {timeout:.0f}s",
                hint=f"it goes on in the background; watch it with `status {record.path}`",
            )
        time.sleep(POLL_SECONDS)


def retry(oc: OnCall, path: str, actor: str, reason: str | None) -> RunRecord:
    """Give a failed or ``needs_attention`` rotation a fresh set of attempts and re-enqueue it."""
    record = refuse_unless_allowed(oc, path, "retry").record
    assert record is not None
    if record.state == "failed":
        ensure_idle(oc, path)
    queued = oc.store.transition(
        record.rotation_id,
        "queued",
        expect=RETRYABLE,
        attempts=0,
        mint_attempts=0,
        last_error=None,
    )
    history.append(
        oc.redis, path, "rotation_retried", rotation_id=record.rotation_id, actor=actor,
        reason=reason, state="queued", detail=f"was {record.state}",
    )  # fmt: skip
    resume = RotateRequest(
        path=path,
        trigger=record.trigger,
        event_id=record.event_id,
        from_version=record.from_version,
        grace_period=record.grace_period,
        actor=actor,
        reason=reason or record.reason,
        rotation_id=record.rotation_id,  # the engine resumes this run instead of a new one
    )
    enqueue_rotate(oc, resume)
    return queued
