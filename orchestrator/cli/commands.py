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

from orchestrator.cli.complete import secret_paths
from orchestrator.cli.options import (
    actor_option,
    json_option,
    reason_option,
    session,
    who,
)
from orchestrator.cli.output import (
    EXIT_FAILED,
    TABLE_COLUMNS,
    dump_json,
    emit,
    guarded,
    render_history,
    render_record,
    render_table,
)
from orchestrator.cli.rotate import finish, rotate

if TYPE_CHECKING:
    pass


@click.command()
@click.argument("path", required=False, shell_complete=secret_paths)
@json_option
def status(path: str | None, as_json: bool) -> None:
    """PATH's current or last rotation; without PATH, what needs a look."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        oc = session()
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
                elif row["waiting"] and row["state"] == "grace":
                    row["state"] = f"grace (waiting: {row['waiting']})"
            click.echo(render_table(rows, TABLE_COLUMNS))


@click.command()
@click.argument("path", shell_complete=secret_paths)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Show at most this many entries (the newest).",
)
@json_option
def history(path: str, limit: int, as_json: bool) -> None:
    """PATH's audit trail, oldest first."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        entries = oncall.recent_history(session(), path, limit)
        emit(entries, as_json, render_history)


@click.command()
@click.argument("path", shell_complete=secret_paths)
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
            session(), path, early=now, timeout=timeout, actor=who(actor), reason=reason
        )
        finish(record, as_json)


@click.command()
@click.argument("path", shell_complete=secret_paths)
@reason_option
@actor_option
@json_option
def retry(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Retry PATH's failed or needs_attention rotation with a fresh set of attempts."""
    with guarded(as_json):
        from orchestrator.cli import trigger

        record = trigger.retry(session(), path, who(actor), reason)
        emit(record.to_dict(), as_json, lambda _: f"rotation {record.rotation_id} re-queued")


@click.command()
@click.argument("path", shell_complete=secret_paths)
@reason_option
@actor_option
@json_option
def cancel(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Cancel PATH's active rotation before it stores a new version."""
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        record = oncall.cancel(session(), path, who(actor), reason)
        emit(record.to_dict(), as_json, lambda _: f"rotation {record.rotation_id} cancelled")


@click.command()
@click.argument("path", shell_complete=secret_paths)
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

        done = grace.rollback(session(), path, actor=who(actor), reason=reason)
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
        usage = "  tells usage (finalize waits while in use)" if info["tells_usage"] else ""
        lines.append(f"{info['name']}  strategy={info['strategy']}{usage}  ({info['target']})")
        lines += [f"    WARNING: {warning}" for warning in info["warnings"]]
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
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the stack's files (logs, state, routing file) here (default: a temp dir).",
)
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
