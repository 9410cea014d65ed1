"""``scaivault-rotator demo``: one whole rotation, end to end, on local defaults, in about 20 s.

It starts the local stack (:class:`~orchestrator.local.sandbox.Sandbox`: Redis, the ScaiVault
emulator, the fake Salesforce, the receiver, a worker and beat), stores two secrets (a random
password and a Salesforce credential) with a rotation policy, triggers rotation through
ScaiVault so the signed webhook path is used, prints the timeline as it happens, and checks the
outcome: new versions stored and finalized, the new Salesforce pair works and the old one is
refused. When PostgreSQL server binaries (and psycopg) are installed it also rotates a
``postgres-dual`` secret on a private server while a consumer is connected, and shows finalize
waiting for that consumer (:mod:`orchestrator.local.demo_postgres`); otherwise it says it
skipped that part and why. Every process it started is stopped on exit, also on Ctrl-C or
failure. Secret values are created and compared here but never printed.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click

from orchestrator import connection
from orchestrator.cli.output import describe_error, dump_json, safe_url
from orchestrator.errors import ConfigError, StackError
from orchestrator.local import demo_postgres
from orchestrator.local.operator_redis import explicit_redis
from orchestrator.local.provisioning import WHO
from orchestrator.local.sandbox import GRACE, Sandbox
from orchestrator.settings import Settings
from orchestrator.state import history
from orchestrator.state.records import TERMINAL, RunRecord, RunState
from orchestrator.state.runs import RunStore

#: States that end the wait: done is success, the rest are failures.
END_STATES = TERMINAL | {RunState.NEEDS_ATTENTION}

#: History fields the timeline shows, by event (the rest repeat what is already on screen).
TIMELINE_FIELDS = {
    "rotation_started": ("trigger", "actor", "rotator", "from_version"),
    "step_done": ("step", "duration_ms"),
    "secret.updated": ("new_version",),
}
DEFAULT_FIELDS = ("step", "from_version", "new_version", "outcome", "detail")

Echo = Callable[[str], None]


@dataclass
class Outcome:
    """What the demo checked, for the final summary and ``--json``."""

    checks: list[tuple[str, bool]] = field(default_factory=list)

    def add(self, name: str, ok: bool) -> None:
        self.checks.append((name, ok))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [{"check": n, "ok": ok} for n, ok in self.checks]}


class Timeline:
    """Prints what happens with seconds since the start, each fact once."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.started = time.monotonic()
        self.seen: set[Any] = set()

    def say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self.started:6.1f}s  {text}")

    def once(self, key: Any, text: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.say(text)


def _clock(iso: str) -> str:
    """``HH:MM:SS`` of an ISO time, for timeline lines."""
    return iso[11:19] if len(iso) >= 19 else iso


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, even if inherited as ignored) into KeyboardInterrupt, so the
    stack is stopped as on Ctrl-C."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Watcher:
    """Follows the rotations of some paths through deliveries, run records and history."""

    def __init__(self, box: Sandbox, paths: list[str], timeline: Timeline) -> None:
        self.box = box
        self.paths = paths
        self.timeline = timeline
        self.client = connection.redis_client(box.ends.redis_url, decode_responses=True)
        self.store = RunStore(self.client)

    def short(self, path: str) -> str:
        return path.removeprefix(self.box.ends.prefix + "/")

    def poll(self) -> dict[str, RunRecord | None]:
        """Print what is new; return each path's latest run record."""
        for item in self.box.deliveries():
            if item.get("path") in self.paths:
                status = item.get("status") or item.get("error")
                self.timeline.once(
                    ("delivery", item["event_id"], item["attempt"]),
                    f"{'scaivault':<{WHO}} signed {item['type']} {item['event_id']} for "
                    f"{self.short(item['path'])} -> receiver answered {status}",
                )
        records = {}
        for path in self.paths:
            for entry in history.read(self.client, path, limit=200):
                self._history_line(path, entry)
            records[path] = record = self.store.last(path)
            if record is not None:
                self.timeline.once(
                    (record.rotation_id, record.state),
                    f"{self.short(path):<{WHO}} state {record.state}"
                    + (f" (new version {record.new_version})" if record.new_version else "")
                    + (
                        f", finalize after {_clock(record.finalize_after)}"
                        if record.state == "grace" and record.finalize_after
                        else ""
                    )
                    + (f" - {record.last_error}" if record.last_error else ""),
                )
        return records

    def _history_line(self, path: str, entry: dict[str, str]) -> None:
        shown = TIMELINE_FIELDS.get(entry.get("event", ""), DEFAULT_FIELDS)
        detail = " ".join(f"{k}={entry[k]}" for k in shown if entry.get(k))
        key = ("history", path, entry.get("ts"), entry.get("event"))
        self.timeline.once(key, f"{self.short(path):<{WHO}} {entry.get('event')} {detail}".rstrip())

    def until_done(
        self, timeout: float, on_poll: Callable[[dict[str, RunRecord | None]], None] | None = None
    ) -> dict[str, RunRecord | None]:
        """Poll until every path's rotation ended (or raise on timeout or a dead process);
        ``on_poll`` sees the records after each poll."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.poll()
            if on_poll is not None:
                on_poll(records)
            if all(r is not None and r.state in END_STATES for r in records.values()):
                return records
            if time.monotonic() > deadline:
                raise StackError(f"the rotations did not finish within {timeout:.0f}s")
            self.box.wait(0.3)

    def close(self) -> None:
        self.client.close()


def check_outcome(
    box: Sandbox,
    records: dict[str, RunRecord | None],
    outcome: Outcome,
    consumer: demo_postgres.Consumer | None = None,
) -> None:
    """Compare ScaiVault, Salesforce and PostgreSQL against what was stored before."""
    for path, record in records.items():
        name = path.removeprefix(box.ends.prefix + "/")
        outcome.add(
            f"{name}: rotation finalized (state done)", bool(record and record.state == "done")
        )
        current = box.read(path)
        meta = current.get("metadata", {})
        outcome.add(
            f"{name}: ScaiVault holds version 2, written by scaivault-rotator",
            current.get("version") == 2 and meta.get("rotated_by") == "scaivault-rotator",
        )
        old, new = box.originals[path], current.get("data", {})
        if consumer is not None and path == consumer.path:
            for check, ok in demo_postgres.check(box, consumer, old, new):
                outcome.add(check, ok)
            continue
        if "password" in old:
            outcome.add(f"{name}: the password changed", new.get("password") != old["password"])
            continue
        outcome.add(f"{name}: the new Salesforce pair is accepted", box.salesforce_accepts(new))
        outcome.add(f"{name}: the old Salesforce pair is refused", not box.salesforce_accepts(old))


def _print_failure(box: Sandbox, echo: Echo, message: str) -> None:
    echo(f"error: {message}")
    dead = box.dead_children()
    for child in dead or [c for n, c in box.children.items() if n in {"worker", "receiver"}]:
        echo(f"--- last lines of {child.name} ({child.log_path}) ---")
        echo(child.log_tail(25))


#: What ``demo.env`` holds: everything the CLI needs, and the emulator's admin token.
DEMO_ENV = (
    "SCAIVAULT_URL",
    "SCAIVAULT_TOKEN",
    "REDIS_URL",
    "ROTATOR_CONFIG",
    "ROTATOR_SEAL_KEY",
    "SCAIVAULT_WEBHOOK_SECRET",
    "EMULATOR_ADMIN_TOKEN",
)


def write_env(box: Sandbox) -> Path:
    """``demo.env`` (mode 0600): the settings to drive the running stack from a shell, and
    the emulator's admin token (its admin API: secrets, tokens, faults, clock)."""
    env_file = box.ends.workdir / "demo.env"
    env = {**box.role_env(), "EMULATOR_ADMIN_TOKEN": box.ends.admin_token}
    lines = [f"# scaivault-rotator demo stack; receiver at {box.ends.receiver_url}"]
    lines += [f"{name}={env[name]}" for name in DEMO_ENV]
    env_file.touch(mode=0o600)
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return env_file


def _keep_running(box: Sandbox, echo: Echo) -> None:
    env_file = write_env(box)
    echo(
        f"\nThe stack is up. {env_file} holds everything to drive it (the CLI's settings and "
        "EMULATOR_ADMIN_TOKEN for the emulator's admin API, e.g. fault injection). In another "
        "terminal:\n"
        f"  set -a; . {env_file}; set +a\n"
        f"  scaivault-rotator status\n"
        f"  scaivault-rotator history {box.ends.prefix}/db/password\n"
        f"  scaivault-rotator rotate {box.ends.prefix}/db/password --wait\n"
        f'  curl -H "Authorization: Bearer $EMULATOR_ADMIN_TOKEN" '
        f"$SCAIVAULT_URL/v1/_emulator/faults\n"
        f"Logs: {box.ends.workdir}/*.log\n"
        "Press Ctrl-C to stop everything."
    )
    while True:
        box.wait(1.0)


def run(*, keep_running: bool, workdir: Path | None, timeout: float, as_json: bool) -> int:
    """Run the demo; return the exit code (0 only when every outcome check passed).

    A temp dir of the demo's own is removed after a successful run; a given ``workdir``, or
    the temp dir of a failed run, is kept for its logs.
    """
    echo: Echo = lambda text: click.echo(text, err=as_json)  # noqa: E731
    work = workdir or Path(tempfile.mkdtemp(prefix="scaivault-demo-"))
    echo(f"scaivault-rotator demo: state and logs in {work}")
    postgres, skipped = demo_postgres.postgres_part(work)
    if postgres is None:
        echo(f"postgres-dual part skipped: {skipped}")
    box = Sandbox(work, redis_url=_operator_redis(echo), echo=lambda _: None, postgres=postgres)
    code = _supervise(box, keep_running, timeout, as_json, echo)
    if code == 0 and workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    elif code != 0:
        echo(f"state and logs kept in {work}")
    return code


def _supervise(box: Sandbox, keep_running: bool, timeout: float, as_json: bool, echo: Echo) -> int:
    timeline = Timeline(echo)
    box.echo = timeline.say
    outcome = Outcome()
    with signals_as_interrupt(), box:
        try:
            _run(box, timeline, outcome, timeout)
        except KeyboardInterrupt:
            echo("interrupted: stopping every process the demo started")
            return 130
        except Exception as exc:  # any failure: say what, show the logs, stop everything
            _print_failure(box, echo, str(exc) if isinstance(exc, StackError) else repr_error(exc))
            return 1
        for name, ok in outcome.checks:
            echo(f"  {'PASS' if ok else 'FAIL'}  {name}")
        if as_json:
            click.echo(dump_json({**outcome.as_dict(), **_where(box)}))
        if not outcome.ok:
            _print_failure(box, echo, "some outcome checks failed")
            return 1
        echo(f"demo OK in {time.monotonic() - timeline.started:.0f}s")
        if keep_running:
            with contextlib.suppress(KeyboardInterrupt):
                _keep_running(box, echo)
        echo("stopping every process the demo started")
    return 0


def _where(box: Sandbox) -> dict[str, str | None]:
    """Where the demo kept its state: its folder, and the private PostgreSQL's (if any)."""
    server = box.postgres.server if box.postgres is not None else None
    return {
        "workdir": str(box.ends.workdir),
        "postgres_dir": str(server.directory) if server and server.directory else None,
    }


def _operator_redis(echo: Echo) -> str | None:
    """A reachable ``REDIS_URL`` the operator set that no deployment uses (else ``None``: the
    sandbox starts a private redis-server); the demo ignores every other setting."""
    try:
        settings = Settings.load()
    except ConfigError:  # e.g. a half-configured deployment's environment: not the demo's
        return None
    url, why_not = explicit_redis(settings)
    if why_not is not None:
        echo(f"REDIS_URL ({safe_url(settings.redis_url)}) {why_not}: using a private one")
    return url


def repr_error(exc: BaseException) -> str:
    """A failure's message the on-call way (our errors' text; a foreign error's type only)."""
    return describe_error(exc).message


def _run(box: Sandbox, timeline: Timeline, outcome: Outcome, timeout: float) -> None:
    demo_postgres.start_server(box, timeline.say)
    box.start()
    paths = [box.add_password("password"), box.add_salesforce("oauth")]
    consumer = None
    if box.postgres is not None:
        paths.append(box.add_postgres(demo_postgres.APP))
        consumer = demo_postgres.Consumer(box, paths[-1], timeline.say)
    timeline.say(
        f"{'scaivault':<{WHO}} stored {len(paths)} secrets under {box.ends.prefix}/ "
        f"with a rotation policy (grace {GRACE})"
    )
    for path in paths:
        timeline.say(f"{'demo':<{WHO}} POST /v1/secrets/{path}/rotate")
        box.trigger(path)
    watcher = Watcher(box, paths, timeline)
    try:
        records = watcher.until_done(timeout, consumer.poll if consumer else None)
        check_outcome(box, records, outcome, consumer)
    finally:
        watcher.close()
        if consumer is not None:
            consumer.close()
