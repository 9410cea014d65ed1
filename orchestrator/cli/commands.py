"""The on-call click commands (rotate, status, history, finalize, retry, cancel, rollback,
acknowledge, rotators, check-config, demo, dev); ``orchestrator.cli.main`` registers them on its
group.

Commands are thin: they parse arguments, call the on-call modules of this package
(:mod:`~orchestrator.cli.session`, :mod:`~orchestrator.cli.trigger`, :mod:`~orchestrator.cli.grace`,
:mod:`~orchestrator.cli.check_config`) or :mod:`orchestrator.local.demo`, and print through
:mod:`~orchestrator.cli.output`. Heavy imports happen inside the commands so that ``serve`` and
``worker`` start without them.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.complete import secret_paths
from orchestrator.cli.options import (
    actor_option,
    json_option,
    quiet_logs,
    reason_option,
    session,
    who,
)
from orchestrator.cli.output import (
    EXIT_FAILED,
    TABLE_COLUMNS,
    dump_json,
    emit,
    fail,
    guarded,
    render_history,
    render_status,
    render_table,
    report,
)
from orchestrator.cli.rotate import rotate
from orchestrator.cli.situation import next_steps, progress

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall
    from orchestrator.state.records import RunRecord


@click.command()
@click.argument("path", required=False, shell_complete=secret_paths)
@click.option("--prefix", help="Count the latest rotations of the secrets under PREFIX.")
@click.option(
    "--by-target", is_flag=True, help="Without PATH: only the summary per target (also --json)."
)
@json_option
def status(path: str | None, prefix: str | None, by_target: bool, as_json: bool) -> None:
    """PATH's current or last rotation; --prefix: how a mass rotation goes; without either,
    what needs a look, and a summary per target."""
    if path is not None and prefix is not None:
        raise click.UsageError("give PATH or --prefix PREFIX, not both")
    if by_target and (path is not None or prefix is not None):
        raise click.UsageError("--by-target summarises every run: give neither PATH nor --prefix")
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        oc = session(naming=True)
        if prefix is not None:
            _status_prefix(oc, prefix, as_json)
            return
        if path is not None:
            record = oncall.last_run(oc, path)
            situation = oc.situation(path, record)
            data = record.to_dict()
            data["overdue"] = oncall.is_overdue(record)
            data["now"] = progress(situation)
            data["next"] = next_steps(situation, path)
            emit(data, as_json, render_status)
            click.echo(oc.asked(), err=True)
            return
        from orchestrator.cli import wave

        rows = wave.with_targets(oc, oncall.overview(oc))
        if by_target:
            emit(wave.by_target(wave.summary_rows(oc, rows)), as_json, wave.render_targets)
        elif as_json:
            click.echo(dump_json(rows))
        elif not rows:
            click.echo("nothing active, failed, stuck or overdue")
        else:
            summary = wave.by_target(wave.summary_rows(oc, rows))
            for row in rows:
                if row["overdue"]:
                    row["state"] = f"{row['state']} (OVERDUE)"
                elif row.get("waiting") and row["state"] == "grace":
                    row["state"] = f"grace (waiting: {row['waiting']})"
            click.echo(render_table(rows, TABLE_COLUMNS))
            click.echo(wave.render_targets(summary))
        click.echo(oc.asked(), err=True)


def _status_prefix(oc: OnCall, prefix: str, as_json: bool) -> None:
    """``status --prefix``: the latest rotations under ``prefix``, counted as a wave."""
    from orchestrator.cli import wave

    ids = wave.latest_under(oc, prefix)
    if not ids:
        fail(
            f"no rotation is recorded under {prefix!r}",
            hint="check the prefix (paths look like integrations/salesforce/oauth); "
            "`scaivault-rotator status` lists what needs a look",
        )
    counted = wave.tally(wave.read_runs(oc, ids))
    emit({"prefix": prefix, **counted.as_dict()}, as_json, lambda _: wave.render(counted))
    click.echo(oc.asked(), err=True)


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

        oc = session(naming=True)
        entries = oncall.recent_history(oc, path, limit)
        emit(entries, as_json, render_history)
        click.echo(oc.asked(), err=True)


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

        oc, acting = session(), who(actor)
        record = grace.finalize_now(
            oc, path, early=now, timeout=timeout, actor=acting, reason=reason
        )
        in_use = grace.forced_in_use(oc, record) if record.state == "done" else None
        report(
            record, as_json, f"finalized {path}", acting, reason, good={"done"},
            extra={"in_use_warning": in_use},
        )  # fmt: skip
        if in_use and not as_json:
            click.echo(f"WARNING: {in_use}", err=True)


@click.command()
@click.argument("path", shell_complete=secret_paths)
@click.option("--wait", is_flag=True, help="Follow the retried rotation to grace or an end.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits.")
@reason_option
@actor_option
@json_option
def retry(
    path: str, wait: bool, timeout: float, reason: str | None, actor: str | None, as_json: bool
) -> None:
    """Retry PATH's failed or needs_attention rotation with a fresh set of attempts."""
    with guarded(as_json):
        from orchestrator.cli import trigger

        oc, acting = session(), who(actor)
        record = trigger.retry(oc, path, acting, reason)
        if wait:
            record = follow(oc, record.rotation_id, timeout, as_json)
            report(record, as_json, f"retried {path}", acting, reason, good={"grace", "done"})
            return
        report(record, as_json, f"retrying {path} (re-queued)", acting, reason, good={"queued"})


@click.command()
@click.argument("path", shell_complete=secret_paths)
@click.option("--wait", is_flag=True, help="Wait until the worker has dropped its new value.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --wait waits.")
@reason_option
@actor_option
@json_option
def cancel(
    path: str, wait: bool, timeout: float, reason: str | None, actor: str | None, as_json: bool
) -> None:
    """Cancel PATH's active rotation before it stores a new version."""
    with guarded(as_json):
        from orchestrator.cli import cancel as cancelling

        oc, acting = session(), who(actor)
        record, driven = cancelling.cancel(oc, path, acting, reason)
        held = record.sealed
        if wait:
            record = cancelling.await_dropped(oc, record, timeout, driven)
        fate = cancelling.cancelled_fate(oc, record, held, waited=wait)
        report(
            record, as_json, f"cancelled {path}", acting, reason, good={"cancelled"},
            new_fate=fate,
        )  # fmt: skip


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

        acting = who(actor)
        done = grace.rollback(session(), path, actor=acting, reason=reason)
        extra = {"new_credential": done.new_credential, "warning": done.warning}
        report(
            done.record, as_json, f"rolled back {path}", acting, reason,
            good={"rolled_back"}, new_fate=done.new_credential, extra=extra,
        )  # fmt: skip
        if done.warning:
            click.echo(f"WARNING: {done.warning}", err=True)


def follow(oc: OnCall, rotation_id: str, timeout: float, as_json: bool) -> RunRecord:
    """Show a run's steps until grace or an end (what ``--wait`` does)."""
    from orchestrator.cli import trigger
    from orchestrator.cli.rotate import Progress

    progress = Progress(as_json)
    try:
        return trigger.follow(oc, rotation_id, timeout, progress.show, tick=progress.tick)
    finally:
        progress.done()


@click.command()
@click.argument("path")
@reason_option
@actor_option
@json_option
def acknowledge(path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Acknowledge PATH's credentials left valid at a target, once revoked by hand.

    'status' lists such credentials (state left_valid) until they are acknowledged: the new
    credential of a rollback that the rotator could not revoke, or an unused one whose
    revocation failed.
    """
    with guarded(as_json):
        from orchestrator.cli import session as oncall

        found = oncall.acknowledge(session(), path, who(actor), reason)
        emit(
            [asdict(stray) for stray in found],
            as_json,
            lambda _: "\n".join(
                f"acknowledged: the credential rotation {s.rotation_id} left valid is no longer "
                "listed (it was revoked by hand)"
                for s in found
            ),
        )


@click.command()
@json_option
def rotators(as_json: bool) -> None:
    """Installed rotator plugins, their strategies and option schemas."""
    with guarded(as_json):
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

        quiet_logs()
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


@click.command()
@click.option(
    "--routing",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your routing file; the worker follows it (edit it while the stack runs).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where state and logs go (default: a temp dir, removed after a clean stop).",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 8),
    help="Worker pool processes of the stack.",
)
@json_option
def dev(routing: Path, workdir: Path | None, concurrency: int, as_json: bool) -> None:
    """Run a local stack to try a rotator on (Redis, emulator, receiver, worker, beat) until
    Ctrl-C; prints the environment the CLI needs."""
    with guarded(as_json):
        from orchestrator.local.dev import run

        sys.exit(run(routing=routing, workdir=workdir, concurrency=concurrency, as_json=as_json))


COMMANDS = (
    rotate,
    status,
    history,
    finalize,
    retry,
    cancel,
    rollback,
    acknowledge,
    rotators,
    check_config,
    demo,
    dev,
)
