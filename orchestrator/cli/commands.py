"""The on-call click commands (rotate, status, history, finalize, retry, cancel, rollback,
rotators, check-config, demo); ``orchestrator.cli.main`` registers them on its group.

Commands are thin: they parse arguments, call the on-call modules of this package
(:mod:`~orchestrator.cli.session`, :mod:`~orchestrator.cli.trigger`, :mod:`~orchestrator.cli.grace`,
:mod:`~orchestrator.cli.check_config`) or :mod:`orchestrator.local.demo`, and print through
:mod:`~orchestrator.cli.output`. Heavy imports happen inside the commands so that ``serve`` and
``worker`` start without them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.output import (
    EXIT_FAILED,
    EXIT_USAGE,
    TABLE_COLUMNS,
    dump_json,
    emit,
    fail,
    guarded,
    render_history,
    render_record,
    render_table,
)
from orchestrator.duration import parse_duration

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall
    from orchestrator.state.records import RunRecord

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
actor_option = click.option("--actor", help="Who does this (default: your login name).")
reason_option = click.option("--reason", help="Why, recorded in the path's history.")


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _session() -> OnCall:
    from orchestrator.cli.session import OnCall
    from orchestrator.log import configure_logging
    from orchestrator.settings import Settings

    settings = Settings.load()
    # Rotator and client logs go to stderr for people, warnings and worse only: stdout is
    # the answer (plain or --json).
    configure_logging(level="WARNING", fmt="console")
    return OnCall(settings)


def _actor(actor: str | None) -> str:
    from orchestrator.cli.session import login_user

    return actor or login_user()


class Progress:
    """Progress while watching: plain lines, or on a terminal timed lines under a live status.

    With ``--json`` the lines go to stderr so stdout stays one JSON document.
    """

    def __init__(self, as_json: bool) -> None:
        import time

        self._clock = time.monotonic
        self.started = self._clock()
        self.as_json = as_json
        self.live = sys.stdout.isatty() and not as_json

    def _stamp(self) -> str:
        return f"[{self._clock() - self.started:5.1f}s]"

    def show(self, line: str) -> None:
        """Print one progress line (a step done, a state change)."""
        if self.live:
            click.echo(f"\r\x1b[K{self._stamp()} {line}", color=True)
        else:
            click.echo(line, err=self.as_json)

    def tick(self, state: str) -> None:
        """Refresh the live status line (terminal only)."""
        if self.live:
            click.echo(f"\r\x1b[K{self._stamp()} ... {state}", nl=False, color=True)

    def done(self) -> None:
        if self.live:
            click.echo("\r\x1b[K", nl=False, color=True)


def _finish(record: RunRecord, as_json: bool) -> None:
    from orchestrator.cli.trigger import GOOD_STATES

    emit(record.to_dict(), as_json, render_record)
    if record.state not in GOOD_STATES:
        if not as_json:
            why = record.last_error or "see `history` for the reason"
            click.echo(f"error: rotation ended {record.state}: {why}", err=True)
            step = NEXT_STEP.get(record.state, "see `history PATH`").replace("PATH", record.path)
            click.echo(f"next: {step}", err=True)
        sys.exit(EXIT_FAILED)


#: What on-call does next when a watched rotation ends badly (the old credential still works).
NEXT_STEP = {
    "failed": "fix the cause above, then `scaivault-rotator retry PATH`",
    "needs_attention": "fix the cause, then `retry PATH`; or `cancel PATH`",
    "skipped": "`status PATH` shows the rotation that holds the path or why it was skipped",
    "cancelled": "someone cancelled it: `history PATH` says who and why",
}


@click.command()
@click.argument("path", required=False)
@click.option("--prefix", help="Emergency mass rotation of every secret under PREFIX.")
@click.option("--wait", is_flag=True, help="Show the steps until grace, done or a failure.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits.")
@click.option("--grace", callback=_duration, help="Grace period, e.g. 48h (default: the rule's).")
@reason_option
@actor_option
@click.option("--via-vault", is_flag=True, help="Ask ScaiVault to fire rotation.due instead.")
@click.option("--yes", is_flag=True, help="Do not ask before a mass rotation.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64))
@json_option
def rotate(
    path: str | None,
    prefix: str | None,
    wait: bool,
    timeout: float,
    grace: str | None,
    reason: str | None,
    actor: str | None,
    via_vault: bool,
    yes: bool,
    concurrency: int,
    as_json: bool,
) -> None:
    """Rotate PATH now (or every secret under --prefix, paced by --concurrency)."""
    if (path is None) == (prefix is None):
        raise click.UsageError("give either PATH or --prefix PREFIX")
    if via_vault and grace is not None:
        raise click.UsageError(
            "--grace cannot be combined with --via-vault: ScaiVault's rotation policy sets the "
            "grace period of the event it fires"
        )
    with guarded(as_json):
        oc = _session()
        who = _actor(actor)
        if prefix is not None:
            _rotate_prefix(
                oc, prefix, who, grace, reason, via_vault, yes, concurrency, timeout, as_json
            )
            return
        assert path is not None
        from orchestrator.cli import trigger

        request = trigger.request_rotation(
            oc, path, grace=grace, reason=reason, actor=who, via_vault=via_vault
        )
        if not wait:
            emit(
                {"path": path, "from_version": request.from_version, "queued": True,
                 "via": request.via, "actor": who},
                as_json,
                lambda d: f"rotation of {path} requested (from version {d['from_version']}, "
                f"via {d['via']}); watch it with `scaivault-rotator status {path}`",
            )  # fmt: skip
            return
        record = trigger.find_new_run(oc, request, timeout=min(timeout, 60.0))
        progress = Progress(as_json)
        try:
            record = trigger.follow(
                oc, record.rotation_id, timeout, progress.show, tick=progress.tick
            )
        finally:
            progress.done()
        _finish(record, as_json)


def _rotate_prefix(
    oc: OnCall,
    prefix: str,
    actor: str,
    grace: str | None,
    reason: str | None,
    via_vault: bool,
    yes: bool,
    concurrency: int,
    timeout: float,
    as_json: bool,
) -> None:
    from orchestrator.cli import trigger

    ready, unrouted, busy = trigger.plan_prefix(oc, prefix)
    click.echo(f"{len(ready)} secret(s) under {prefix!r} will be rotated:", err=True)
    for path in ready:
        click.echo(f"  {path}", err=True)
    for path in unrouted:
        click.echo(f"  skipped {path}: no routing rule matches", err=True)
    for record in busy:
        click.echo(
            f"  skipped {record.path}: rotation {record.rotation_id} is {record.state}", err=True
        )
    if not ready:
        fail(f"nothing to rotate under {prefix!r}", hint="check the prefix and the routing file")
    if not yes:
        if not sys.stdin.isatty():
            fail("a mass rotation needs confirmation", hint="pass --yes", exit_code=EXIT_USAGE)
        click.confirm(f"Rotate {len(ready)} secret(s), {concurrency} at a time?", abort=True)

    def start(path: str) -> trigger.Request:
        return trigger.request_rotation(
            oc, path, grace=grace, reason=reason, actor=actor, via_vault=via_vault
        )

    results = trigger.rotate_paced(
        oc, ready, concurrency=concurrency, timeout=timeout, start=start,
        show=Progress(as_json).show,
    )  # fmt: skip
    outcome = {
        path: {"state": None, "error": result}
        if isinstance(result, str)
        else {"state": result.state, "error": result.last_error}
        for path, result in sorted(results.items())
    }
    bad = {p: o for p, o in outcome.items() if o["state"] not in trigger.GOOD_STATES}
    if as_json:
        click.echo(dump_json({"rotations": outcome, "skipped": unrouted + [r.path for r in busy]}))
    else:
        for path, item in bad.items():
            click.echo(
                f"error: {path}: {item['state'] or 'not started'}: {item['error']}", err=True
            )
        click.echo(f"{len(outcome) - len(bad)} of {len(outcome)} rotation(s) reached grace or done")
    if bad:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("path", required=False)
@json_option
def status(path: str | None, as_json: bool) -> None:
    """PATH's current or last rotation; without PATH, what needs a look."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        oc = _session()
        if path is not None:
            record = oncall.last_run(oc, path)
            data = record.to_dict()
            data["overdue"] = oncall.is_overdue(record)
            emit(data, as_json, render_record)
            return
        rows = oncall.overview(oc)
        if as_json:
            click.echo(dump_json(rows))
        elif not rows:
            click.echo("nothing active, failed, stuck or overdue")
        else:
            for row in rows:
                if row["overdue"]:
                    row["state"] = f"{row['state']} (OVERDUE)"
            click.echo(render_table(rows, TABLE_COLUMNS))


@click.command()
@click.argument("path")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def history(path: str, limit: int, as_json: bool) -> None:
    """PATH's audit trail, oldest first."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        entries = oncall.recent_history(_session(), path, limit)
        emit(entries, as_json, render_history)


@click.command()
@click.argument("path")
@click.option("--now", is_flag=True, help="Finalize before the grace period ends.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for it.")
@reason_option
@actor_option
@json_option
def finalize(
    path: str, now: bool, timeout: float, reason: str | None, actor: str | None, as_json: bool
) -> None:
    """Finalize PATH's rotation in grace: re-verify the new credential, then revoke the old."""
    with guarded(as_json):
        from orchestrator.cli import grace

        record = grace.finalize_now(
            _session(), path, early=now, timeout=timeout, actor=_actor(actor), reason=reason
        )
        _finish(record, as_json)


@click.command()
@click.argument("path")
@reason_option
@actor_option
@json_option
def retry(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Retry PATH's failed or needs_attention rotation with a fresh set of attempts."""
    with guarded(as_json):
        from orchestrator.cli import trigger

        record = trigger.retry(_session(), path, _actor(actor), reason)
        emit(record.to_dict(), as_json, lambda _: f"rotation {record.rotation_id} re-queued")


@click.command()
@click.argument("path")
@reason_option
@actor_option
@json_option
def cancel(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Cancel PATH's active rotation before it stores a new version."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        record = oncall.cancel(_session(), path, _actor(actor), reason)
        emit(record.to_dict(), as_json, lambda _: f"rotation {record.rotation_id} cancelled")


@click.command()
@click.argument("path")
@reason_option
@actor_option
@json_option
def rollback(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Roll PATH back to the previous version during grace.

    ScaiVault gets the previous data as a new version and the target accepts the old
    credential again. The new credential is revoked where the rotator can; where it cannot
    (e.g. Salesforce cannot un-rotate a promoted pair) a warning says it is still valid and
    must be revoked by hand. Exit 0 either way: the rollback itself succeeded.
    """
    with guarded(as_json):
        from orchestrator.cli import grace

        done = grace.rollback(_session(), path, actor=_actor(actor), reason=reason)
        data = {**done.record.to_dict(), "new_credential": done.new_credential}
        data["warning"] = done.warning
        emit(
            data,
            as_json,
            lambda _: (
                f"rolled back {path}: ScaiVault holds the previous data as a new version; "
                f"{done.new_credential}"
            ),
        )
        if done.warning:
            click.echo(f"WARNING: {done.warning}", err=True)


@click.command()
@json_option
def rotators(as_json: bool) -> None:
    """Installed rotator plugins, their strategies and option schemas."""
    with guarded(as_json):
        from dataclasses import asdict

        from orchestrator.plugins import discover

        infos = [asdict(info) for info in discover()]
        emit(infos, as_json, _render_rotators)
        if any(info["error"] for info in infos):
            sys.exit(EXIT_FAILED)


def _render_rotators(infos: list[dict[str, Any]]) -> str:
    lines = []
    for info in infos:
        if info["error"]:
            lines.append(f"{info['name']}  BROKEN: {info['error']}")
            continue
        props = info["options_schema"].get("properties", {})
        required = set(info["options_schema"].get("required", []))
        lines.append(f"{info['name']}  strategy={info['strategy']}  ({info['target']})")
        for name, spec in props.items():
            kind = spec.get("type") or "/".join(a.get("type", "?") for a in spec.get("anyOf", []))
            mark = " (required)" if name in required else f" default={spec.get('default')!r}"
            lines.append(f"    {name}: {kind}{mark}")
    return "\n".join(lines) or "no rotator plugins installed"


@click.command("check-config")
@click.option(
    "--probe-write",
    is_flag=True,
    help="Also test the token's write permission: a PUT of a secret's current data whose cas "
    "can never match (ScaiVault refuses it; without this flag nothing is written).",
)
@json_option
def check_config(probe_write: bool, as_json: bool) -> None:
    """Validate settings and the routing file, and check ScaiVault and Redis; list every problem.

    Read-only unless --probe-write is given.
    """
    with guarded(as_json):
        from orchestrator.cli.check_config import check

        report = check(probe_write=probe_write)
        emit(report.as_dict(), as_json, lambda _: report.render())
        if report.problems:
            sys.exit(report.exit_code)


@click.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up until Ctrl-C.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--timeout", default=150.0, show_default=True, help="Seconds to wait for the run.")
@json_option
def demo(keep_running: bool, workdir: Path | None, timeout: float, as_json: bool) -> None:
    """Run a whole rotation end to end on local defaults (Redis, emulator, fake Salesforce, ...)."""
    with guarded(as_json):
        from orchestrator.local.demo import run

        sys.exit(run(keep_running=keep_running, workdir=workdir, timeout=timeout, as_json=as_json))


COMMANDS = (
    rotate,
    status,
    history,
    finalize,
    retry,
    cancel,
    rollback,
    rotators,
    check_config,
    demo,
)
