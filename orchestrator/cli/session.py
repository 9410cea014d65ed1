"""The on-call session and its read side: find a path's rule, version and runs; list what is
stuck; cancel a rotation.

Each function takes an :class:`OnCall` (the connections a command needs, opened lazily with
errors that say what to do) and raises :class:`~orchestrator.cli.output.CommandError` when the
operation cannot be done. Starting and retrying rotations is in :mod:`orchestrator.cli.trigger`,
finalize early and rollback in :mod:`orchestrator.cli.grace`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from datetime import datetime
from functools import cached_property
from typing import Any

import redis

from orchestrator import connection
from orchestrator.cli.output import EXIT_USAGE, safe_url
from orchestrator.errors import AccessDenied, CommandError, NotFound
from orchestrator.routing import RoutingTable, Rule
from orchestrator.settings import Settings
from orchestrator.state import history, keys
from orchestrator.state.records import ACTIVE, RunRecord
from orchestrator.state.runs import RunStore
from orchestrator.vault.client import VaultClient

#: States ``cancel`` may stop: nothing stored yet.
CANCELLABLE = frozenset({"queued", "minting", "applying", "verifying", "needs_attention"})
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
            client = connection.redis_client(
                url,
                master=self.settings.redis_sentinel_master,
                socket_connect_timeout=3,
                socket_timeout=10,
            )
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
        """Which rule covers which path; no plugin is imported (on-call runs no rotator code)."""
        return RoutingTable.load(self.settings.rotator_config, plugins=False)

    @cached_property
    def producer(self) -> Any:
        """A publish-only Celery app: JSON, our queue, no retrying a dead broker forever. One per
        command (``rotate --prefix`` publishes thousands)."""
        from celery import Celery  # imported here: status and history do not need it

        broker = connection.broker_settings(
            self.settings.redis_url,
            master=self.settings.redis_sentinel_master,
            transport_options={"visibility_timeout": self.settings.rotator_visibility_timeout},
        )
        app = Celery("scaivault-rotator-cli", broker=broker.pop("broker_url"), set_as_current=False)
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_default_queue=keys.TASK_QUEUE,
            broker_connection_timeout=self.settings.rotator_publish_timeout,
            **broker,
        )
        return app

    def close(self) -> None:
        """Close whatever was opened."""
        if "producer" in self.__dict__:
            self.producer.close()
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


# --- reading -------------------------------------------------------------------------------


def _iso_to_epoch(text: str | None) -> float | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def is_overdue(record: RunRecord, now: float | None = None) -> bool:
    """True when a rotation in grace should have been finalized a while ago (one whose
    finalize waits for the old credential to be unused is not late: it says why it waits)."""
    due = _iso_to_epoch(record.finalize_after)
    moment = time.time() if now is None else now
    return (
        record.state in {"grace", "finalizing"}
        and not record.waiting
        and due is not None
        and moment > due + OVERDUE_SLACK_SECONDS
    )


def overview(oc: OnCall, limit: int = 200) -> list[dict[str, Any]]:
    """Rotations on-call should look at: active, failed, needs_attention and overdue ones."""
    wanted = set(ACTIVE) | {"failed"}
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
    if record.state not in CANCELLABLE or _stored(oc, record):
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


def _stored(oc: OnCall, record: RunRecord) -> bool:
    """Whether ``record`` stored its new version already: its record says so, or (a run that
    needs attention may not know) ScaiVault's current version carries its id."""
    if record.new_version is not None:
        return True
    if record.state != "needs_attention":
        return False
    return oc.vault.read(record.path).metadata.get("rotation_id") == record.rotation_id
