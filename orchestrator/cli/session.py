"""The on-call session and its read side: find a path's rule, version and runs; list what is
stuck.

Each function takes an :class:`OnCall` (the connections a command needs, opened lazily with
errors that say what to do) and raises :class:`~orchestrator.cli.output.CommandError` when the
operation cannot be done. Starting and retrying rotations is in :mod:`orchestrator.cli.trigger`,
cancelling in :mod:`orchestrator.cli.cancel`, finalize early and rollback in
:mod:`orchestrator.cli.grace`.
"""

from __future__ import annotations

import os
import pwd
import time
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import redis

from orchestrator import connection
from orchestrator.cli.output import EXIT_USAGE, safe_url
from orchestrator.cli.situation import Situation, driving, hint, refusal
from orchestrator.errors import AccessDenied, CommandError, ConfigError, NotFound
from orchestrator.routing import RoutingTable, Rule
from orchestrator.settings import Settings
from orchestrator.state import history, keys
from orchestrator.state.records import ACTIVE, BOTH_VALID, RunRecord
from orchestrator.state.runs import RunStore
from orchestrator.state.strays import Stray, Strays
from orchestrator.vault.client import VaultClient
from rotators.versions import parse_time

#: The ``status`` state of a credential left valid at a target (not a run state).
STRAY_STATE = "left_valid"
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


def require_named_redis(settings: Settings) -> None:
    """Refuse (bad usage) when REDIS_URL is the default nobody chose: an answer from another
    Redis would be a false all-clear."""
    if settings.redis_url_defaulted and not settings.rotator_cli_allow_defaults:
        raise CommandError(
            f"REDIS_URL is not set: on-call commands do not guess which Redis holds the "
            f"rotations (the default, {settings.redis_url}, may be another one)",
            hint="set REDIS_URL to the workers' Redis (after `demo --keep-running`: "
            "`set -a; . demo.env; set +a`, after `dev`: the same with dev.env), or "
            "ROTATOR_CLI_ALLOW_DEFAULTS=true if the default is it",
            exit_code=EXIT_USAGE,
        )


class OnCall:
    """What an on-call command talks to, each opened on first use with a clear error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        url = self.settings.redis_url
        require_named_redis(self.settings)
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

    def situation(self, path: str, record: RunRecord | None = None) -> Situation:
        """``path``'s last run (or ``record``) and what decides what may be done with it."""
        if record is None:
            record = self.store.last(path)
        seconds, micros = self.redis.time()
        now = datetime.fromtimestamp(seconds + micros / 1e6, UTC)
        strays = tuple(Strays(self.redis).of(path))
        return Situation(record, routed=self.routed(path), now=now, strays=strays)

    def routed(self, path: str) -> bool:
        """Whether a routing rule matches ``path`` (True when the file cannot be read here:
        the workers' copy decides, and a missing copy on on-call's machine must not block)."""
        try:
            return self.routing.match(path) is not None
        except ConfigError:
            return True

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

    def asked(self) -> str:
        """Which Redis and ScaiVault this command asked (hosts only, never credentials)."""
        parts = []
        if "redis" in self.__dict__:
            parts.append(f"redis {_host_of(self.settings.redis_url)}")
        if "vault" in self.__dict__ and self.settings.scaivault_url:
            parts.append(f"scaivault {_host_of(self.settings.scaivault_url)}")
        return "asked " + ", ".join(parts) if parts else ""

    def close(self) -> None:
        """Close whatever was opened."""
        if "producer" in self.__dict__:
            self.producer.close()
        if "vault" in self.__dict__:
            self.vault.close()
        if "redis" in self.__dict__:
            self.redis.close()


def _host_of(url: str) -> str:
    """``scheme://host:port/db`` of ``url`` without user-info, query or a path (Sentinel URLs:
    each Sentinel's host)."""
    if ";" in url:
        return ";".join(_host_of(part) for part in url.split(";"))
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    db = parts.path if parts.scheme.startswith(("redis", "sentinel")) else ""
    return f"{parts.scheme}://{host}{db}"


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
        hint=hint(Situation(None, routed=oc.routed(path)), path),
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


def ensure_idle(oc: OnCall, path: str) -> None:
    """Refuse when a rotation already holds ``path``."""
    record = oc.store.active(path)
    if record is not None:
        raise CommandError(
            f"a rotation is already active on {path!r}: {record.rotation_id} is {record.state}",
            hint=hint(oc.situation(path, record), path),
        )


def refuse_unless_allowed(oc: OnCall, path: str, command: str) -> Situation:
    """``path``'s situation, or a :class:`CommandError` saying why ``command`` cannot run and
    what can (:mod:`orchestrator.cli.situation`)."""
    situation = oc.situation(path)
    why = refusal(situation, command)
    if why is not None:
        if situation.record is None:
            last_run(oc, path)  # raises the right "unknown path" / "nothing yet" error
        raise CommandError(f"cannot {command} {path}: {why}", hint=hint(situation, path) or None)
    return situation


# --- reading -------------------------------------------------------------------------------


def is_overdue(record: RunRecord, now: float | None = None) -> bool:
    """True when a rotation in grace should have been finalized a while ago (one whose
    finalize waits for the old credential to be unused is not late: it says why it waits)."""
    due = parse_time(record.finalize_after)
    moment = time.time() if now is None else now
    return (
        record.state in BOTH_VALID
        and not record.waiting
        and due is not None
        and moment > due.timestamp() + OVERDUE_SLACK_SECONDS
    )


def overview(oc: OnCall, limit: int = 200) -> list[dict[str, Any]]:
    """Rotations on-call should look at: active, failed, needs_attention and overdue ones, and
    every credential left valid at a target (state ``left_valid``) until acknowledged."""
    wanted = set(ACTIVE) | {"failed"}
    seconds, micros = oc.redis.time()
    now = datetime.fromtimestamp(seconds + micros / 1e6, UTC)
    rows = [
        {"path": s.path, "state": STRAY_STATE, "rotation_id": s.rotation_id,
         "last_error": s.detail, "since": s.since, "overdue": False}
        for s in Strays(oc.redis).all()
    ]  # fmt: skip
    for record in oc.store.list(states=wanted, limit=limit):
        if record.state == "failed" and _superseded(oc, record):
            continue  # a later rotation of the path took over: nothing to look at
        row = record.to_dict()
        row["overdue"] = is_overdue(record)
        row["driving"] = driving(record, now)
        rows.append(row)
    return rows


def acknowledge(oc: OnCall, path: str, actor: str, reason: str | None) -> list[Stray]:
    """Forget ``path``'s credentials left valid at a target: on-call revoked them by hand."""
    found = Strays(oc.redis).acknowledge(path)
    if not found:
        raise CommandError(
            f"no credential of {path!r} is recorded as left valid at a target",
            hint="`status` lists the ones that are (state left_valid)",
        )
    for stray in found:
        history.append(
            oc.redis, path, "stray_acknowledged", rotation_id=stray.rotation_id, actor=actor,
            reason=reason, detail=stray.detail,
        )  # fmt: skip
    return found


def _superseded(oc: OnCall, record: RunRecord) -> bool:
    latest = oc.store.last(record.path)
    return latest is not None and latest.rotation_id != record.rotation_id


def recent_history(oc: OnCall, path: str, limit: int) -> list[dict[str, str]]:
    """The audit trail of ``path``, oldest first; an unknown path is an error."""
    entries = history.read(oc.redis, path, limit=limit)
    if not entries:
        last_run(oc, path)  # raises the right "unknown" / "nothing yet" error
    return entries
