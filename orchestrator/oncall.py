"""The on-call operations behind the CLI: start, watch, list, retry and cancel rotations.

Each function takes an :class:`OnCall` (the connections a command needs, opened lazily with
errors that say what to do) and raises :class:`~orchestrator.output.CommandError` when the
operation cannot be done. Rotations are started by publishing the contract task
``scaivault.rotate`` by name (DESIGN §8) with ids and paths only; the worker's engine does the
work and keeps the run record this module reads.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import redis

from orchestrator import history, keys
from orchestrator.errors import AccessDenied, NotFound
from orchestrator.output import EXIT_USAGE, CommandError, render_entry, render_step, safe_url
from orchestrator.routing import RoutingTable, Rule
from orchestrator.settings import Settings
from orchestrator.store import ACTIVE_STATES, RunRecord, RunStore
from orchestrator.vault import VaultClient

#: States at which ``rotate --wait`` stops watching.
STOP_STATES = frozenset(
    {"grace", "done", "failed", "needs_attention", "cancelled", "rolled_back", "skipped"}
)
#: Of those, the ones that mean the rotation worked (so far).
GOOD_STATES = frozenset({"grace", "done"})
#: States ``cancel`` may stop: nothing stored yet.
CANCELLABLE = frozenset({"queued", "minting", "applying", "verifying", "needs_attention"})
#: States ``retry`` may restart.
RETRYABLE = frozenset({"failed", "needs_attention"})
#: How long past ``finalize_after`` a rotation in grace counts as overdue.
OVERDUE_SLACK_SECONDS = 120.0
POLL_SECONDS = 0.25
#: Seconds an on-call command keeps retrying a ScaiVault that answers "unavailable".
CLI_RETRY_DEADLINE = 8.0


def login_user() -> str:
    """The operator's login name, recorded as the actor of manual operations."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"


class OnCall:
    """What an on-call command talks to, each opened on first use with a clear error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        url = self.settings.redis_url
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
            client.ping()
        except (redis.RedisError, ValueError) as exc:
            raise CommandError(
                f"Redis at {safe_url(url)} is unreachable ({type(exc).__name__})",
                hint="start Redis or set REDIS_URL to the Redis the workers use",
            ) from None
        return client

    @cached_property
    def store(self) -> RunStore:
        return RunStore(self.redis)

    @cached_property
    def vault(self) -> VaultClient:
        self.settings.require_vault()
        # On-call commands should not hang a worker's minute on a ScaiVault that is down.
        deadline = min(self.settings.scaivault_retry_deadline, CLI_RETRY_DEADLINE)
        return VaultClient(self.settings.model_copy(update={"scaivault_retry_deadline": deadline}))

    @cached_property
    def routing(self) -> RoutingTable:
        return RoutingTable.load(self.settings.rotator_config)

    def close(self) -> None:
        """Close whatever was opened."""
        if "vault" in self.__dict__:
            self.vault.close()
        if "redis" in self.__dict__:
            self.redis.close()


# --- finding things ------------------------------------------------------------------------


def rule_for(oc: OnCall, path: str) -> Rule:
    """The routing rule for ``path``, or a bad-usage error saying how to add one."""
    rule = oc.routing.match(path)
    if rule is None:
        raise CommandError(
            f"no routing rule matches {path!r} in {oc.settings.rotator_config}",
            hint="add a [[rules]] entry whose match covers this path (see check-config), "
            "or check the path's spelling",
            exit_code=EXIT_USAGE,
        )
    return rule


def current_version(oc: OnCall, path: str) -> int:
    """The current ScaiVault version of ``path``; an unknown path is a clear error."""
    try:
        return oc.vault.read(path).version
    except NotFound:
        raise CommandError(
            f"unknown path: ScaiVault has no secret at {path!r}",
            hint="check the path's spelling; paths look like integrations/salesforce/oauth",
        ) from None


def last_run(oc: OnCall, path: str) -> RunRecord:
    """The latest rotation of ``path``, or an error that tells unknown paths apart."""
    record = oc.store.last(path)
    if record is not None:
        return record
    known = _known_in_vault(oc, path)
    if known is not True and known is not None:
        raise CommandError(
            f"unknown path: no rotation of {path!r} is recorded and {known}",
            hint="check the path's spelling; `scaivault-rotator status` lists recent rotations",
        )
    raise CommandError(
        f"no rotation of {path!r} has been recorded yet",
        hint=f"start one with `scaivault-rotator rotate {path}`",
    )


def _known_in_vault(oc: OnCall, path: str) -> bool | str | None:
    """True if ScaiVault has ``path``, else why not; ``None`` when we cannot ask ScaiVault."""
    if not oc.settings.scaivault_url:
        return None
    try:
        oc.vault.read(path)
    except NotFound:
        return "ScaiVault has no secret there"
    except AccessDenied:
        return "ScaiVault does not let this token read it"
    except Exception:  # ScaiVault down or misconfigured: not this question's business
        return None
    return True


def busy_hint(record: RunRecord) -> str:
    """What on-call can do about a rotation holding its path, by state."""
    path = record.path
    if record.state == "grace":
        return f"it is in grace: `finalize {path} --now` ends it, `rollback {path}` undoes it"
    if record.state == "needs_attention":
        return f"it needs attention: `retry {path}` or `cancel {path}`"
    return f"watch it with `status {path}`; stop it with `cancel {path}`"


def ensure_idle(oc: OnCall, path: str) -> None:
    """Refuse when a rotation already holds ``path``."""
    record = oc.store.active(path)
    if record is not None:
        raise CommandError(
            f"a rotation is already active on {path!r}: {record.rotation_id} is {record.state}",
            hint=busy_hint(record),
        )


# --- starting rotations --------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A rotation asked for: where, from which version, and the run that was latest before."""

    path: str
    from_version: int
    before: str | None
    via: str
    requested_at: float


def producer(settings: Settings) -> Any:
    """A publish-only Celery app: JSON, our queue, no retrying a dead broker forever."""
    from celery import Celery  # imported here: status and history do not need it

    app = Celery("scaivault-rotator-cli", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=keys.TASK_QUEUE,
        broker_connection_timeout=settings.rotator_publish_timeout,
        broker_transport_options={"visibility_timeout": settings.rotator_visibility_timeout},
    )
    return app


def enqueue_rotate(settings: Settings, **kwargs: Any) -> None:
    """Publish ``scaivault.rotate`` with the contract's keyword arguments (no secret data).

    ``rotation_id`` (the engine's extension) resumes that run rather than starting one.
    """
    app = producer(settings)
    try:
        app.send_task("scaivault.rotate", kwargs=kwargs, queue=keys.TASK_QUEUE, retry=False)
    finally:
        app.close()


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
    if via_vault:
        oc.vault.rotate(path)
    else:
        enqueue_rotate(
            oc.settings,
            path=path,
            trigger="manual",
            event_id=None,
            from_version=version,
            grace_period=grace,
            actor=actor,
            reason=reason,
        )
    history.append(
        oc.redis,
        path,
        "rotation_requested",
        actor=actor,
        reason=reason,
        trigger="manual",
        from_version=version,
        detail="via ScaiVault POST /rotate" if via_vault else "enqueued by the CLI",
    )
    return Request(path, version, before.rotation_id if before else None, via, time.time())


def find_new_run(oc: OnCall, request: Request, timeout: float) -> RunRecord:
    """The run the request started, once a worker has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = oc.store.last(request.path)
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


def plan_prefix(oc: OnCall, prefix: str) -> tuple[list[str], list[str], list[RunRecord]]:
    """For a mass rotation: paths to rotate, paths no rule covers, and busy rotations."""
    ready: list[str] = []
    unrouted: list[str] = []
    busy: list[RunRecord] = []
    for path in sorted(oc.vault.list(prefix)):
        active = oc.store.active(path)
        if oc.routing.match(path) is None:
            unrouted.append(path)
        elif active is not None:
            busy.append(active)
        else:
            ready.append(path)
    return ready, unrouted, busy


def rotate_paced(
    oc: OnCall,
    paths: list[str],
    *,
    concurrency: int,
    timeout: float,
    start: Callable[[str], Request],
    show: Callable[[str], None],
) -> dict[str, RunRecord | str]:
    """Rotate ``paths`` keeping at most ``concurrency`` in flight (until grace or an end)."""
    pending = list(paths)
    inflight: dict[str, tuple[Request, float, str | None]] = {}
    results: dict[str, RunRecord | str] = {}
    while pending or inflight:
        while pending and len(inflight) < concurrency:
            path = pending.pop(0)
            try:
                inflight[path] = (start(path), time.monotonic(), None)
            except CommandError as exc:
                results[path] = exc.message
        for path, (request, began, last_state) in list(inflight.items()):
            record = oc.store.last(path)
            if record is None or record.rotation_id == request.before:
                state = None
            else:
                state = record.state
                if state != last_state:
                    show(render_step(record.to_dict()))
                    inflight[path] = (request, began, state)
            if record is not None and state in STOP_STATES:
                results[path] = record
                del inflight[path]
            elif time.monotonic() - began > timeout:
                results[path] = (
                    f"not finished after {timeout:.0f}s (state {state or 'not started'})"
                )
                del inflight[path]
        if pending or inflight:
            time.sleep(POLL_SECONDS)
    return results


# --- reading -------------------------------------------------------------------------------


def _iso_to_epoch(text: str | None) -> float | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def is_overdue(record: RunRecord, now: float | None = None) -> bool:
    """True when a rotation in grace should have been finalized a while ago."""
    due = _iso_to_epoch(record.finalize_after)
    moment = time.time() if now is None else now
    return (
        record.state in {"grace", "finalizing"}
        and due is not None
        and moment > due + OVERDUE_SLACK_SECONDS
    )


def overview(oc: OnCall, limit: int = 200) -> list[dict[str, Any]]:
    """Rotations on-call should look at: active, failed, needs_attention and overdue ones."""
    wanted = set(ACTIVE_STATES) | {"failed"}
    rows = []
    for record in oc.store.list(states=wanted, limit=limit):
        if record.state == "failed" and _superseded(oc, record):
            continue  # a later rotation of the path took over: nothing to look at
        row = record.to_dict()
        row["overdue"] = is_overdue(record)
        rows.append(row)
    return rows


def _superseded(oc: OnCall, record: RunRecord) -> bool:
    latest = oc.store.last(record.path)
    return latest is not None and latest.rotation_id != record.rotation_id


def recent_history(oc: OnCall, path: str, limit: int) -> list[dict[str, str]]:
    """The audit trail of ``path``, oldest first; an unknown path is an error."""
    entries = history.read(oc.redis, path, limit=limit)
    if not entries:
        last_run(oc, path)  # raises the right "unknown" / "nothing yet" error
    return entries


# --- changing rotations --------------------------------------------------------------------


def cancel(oc: OnCall, path: str, actor: str, reason: str | None) -> RunRecord:
    """Stop an active rotation that has stored nothing yet (the engine checks before each step)."""
    record = oc.store.active(path)
    if record is None:
        raise CommandError(
            f"no active rotation on {path!r} to cancel",
            hint=f"`status {path}` shows its last rotation",
        )
    if record.state not in CANCELLABLE:
        raise CommandError(
            f"rotation {record.rotation_id} is {record.state}: the new version is already "
            "stored, so cancelling would leave two live credentials",
            hint=busy_hint(record),
        )
    done = oc.store.transition(
        record.rotation_id,
        "cancelled",
        expect=CANCELLABLE,
        refuse_if_sealed=True,
        last_error=f"cancelled by {actor}" + (f": {reason}" if reason else ""),
    )
    history.append(
        oc.redis, path, "rotation_cancelled", rotation_id=done.rotation_id, actor=actor,
        reason=reason, state="cancelled", detail=f"was {record.state}",
    )  # fmt: skip
    return done


def retry(oc: OnCall, path: str, actor: str, reason: str | None) -> RunRecord:
    """Give a failed or ``needs_attention`` rotation a fresh set of attempts and re-enqueue it."""
    record = oc.store.last(path)
    if record is None or record.state not in RETRYABLE:
        state = record.state if record else "not recorded"
        raise CommandError(
            f"nothing to retry on {path!r}: its last rotation is {state}",
            hint="retry works on failed or needs_attention rotations; "
            f"start a new one with `rotate {path}`",
        )
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
    oc.redis.delete(keys.attempts(record.rotation_id))
    history.append(
        oc.redis, path, "rotation_retried", rotation_id=record.rotation_id, actor=actor,
        reason=reason, state="queued", detail=f"was {record.state}",
    )  # fmt: skip
    enqueue_rotate(
        oc.settings,
        path=path,
        trigger=record.trigger,
        event_id=record.event_id,
        from_version=record.from_version,
        grace_period=record.grace_period,
        actor=actor,
        reason=reason or record.reason,
        rotation_id=record.rotation_id,  # the engine resumes this run instead of a new one
    )
    return queued
