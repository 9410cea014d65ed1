"""``rotate``: one path now (``--wait`` follows it to grace), a dry run, or a wave under a
prefix (``rotate_prefix``); and how a followed rotation is shown while it runs and ends."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.complete import secret_paths
from orchestrator.cli.options import (
    actor_option,
    duration,
    json_option,
    reason_option,
    session,
    who,
)
from orchestrator.cli.output import (
    EXIT_FAILED,
    dump_json,
    emit,
    fail,
    guarded,
    render_record,
)
from orchestrator.cli.rotate_prefix import rotate_prefix, show_plan
from orchestrator.cli.situation import Situation, hint

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall
    from orchestrator.state.records import RunRecord


#: Seconds ``rotate PATH --wait`` waits by default.
WAIT_SECONDS = 300.0


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


def finish(record: RunRecord, as_json: bool, routed_here: str | None = None) -> None:
    """Print how a followed rotation ended; exit 1 unless it reached grace or done.

    ``routed_here`` names the rule of the CLI's own routing file that routes the path, if any.
    """
    from orchestrator.cli.trigger import GOOD_STATES

    emit(record.to_dict(), as_json, render_record)
    if record.state not in GOOD_STATES:
        if not as_json:
            why = record.last_error or "see `history` for the reason"
            click.echo(f"error: rotation ended {record.state}: {why}", err=True)
            step = stale_rule_step(record, routed_here) or hint(Situation(record), record.path)
            click.echo(f"next: {step or f'`history {record.path}`'}", err=True)
        sys.exit(EXIT_FAILED)


def stale_rule_step(record: RunRecord, routed_here: str | None) -> str | None:
    """After a skip for lack of a rule that the CLI's own routing file has: how to get the
    worker to load it (None for any other ending)."""
    from orchestrator.routing import NO_RULE

    path = record.path
    if record.state != "skipped" or not routed_here:
        return None
    if not (record.last_error or "").startswith(NO_RULE):
        return None
    return (
        f"{routed_here} routes {path}, but the worker that took the request did not have that "
        "rule: a worker reloads its routing file when it changes and keeps its old table "
        "while the new one is invalid (its log says routing_reload_rejected; "
        "`scaivault-rotator check-config` lists the problems). Make sure the worker reads "
        "this file (ROTATOR_CONFIG), reload it (`systemctl reload scaivault-rotator-worker` "
        f"or SIGHUP to its main process), then `rotate {path}` again"
    )


@click.command()
@click.argument("path", required=False, shell_complete=secret_paths)
@click.option("--prefix", help="Emergency mass rotation of every secret under PREFIX.")
@click.option("--wait", is_flag=True, help="Show the steps until grace, done or a failure.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds --wait waits (default 300); with --prefix, seconds to watch (default: until "
    "all are stored or failed).",
)
@click.option("--grace", callback=duration, help="Grace period, e.g. 48h (default: the rule's).")
@reason_option
@actor_option
@click.option("--via-vault", is_flag=True, help="Ask ScaiVault to fire rotation.due instead.")
@click.option("--yes", is_flag=True, help="Do not ask before a mass rotation.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Change nothing: show each path's rule, rotator, target, grace and version, and probe "
    "(read only) whether its rotation could run now; exit 1 naming why one would fail.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    help="With --prefix: run at most this many of the batch at once per target (lowers the "
    "target's budget for this batch; the CLI does not pace).",
)
@json_option
def rotate(
    path: str | None,
    prefix: str | None,
    wait: bool,
    timeout: float | None,
    grace: str | None,
    reason: str | None,
    actor: str | None,
    via_vault: bool,
    yes: bool,
    dry_run: bool,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Rotate PATH now, or every routed secret under --prefix (all queued at once, with one
    live progress line; Ctrl-C stops watching, not rotating)."""
    if (path is None) == (prefix is None):
        raise click.UsageError("give either PATH or --prefix PREFIX")
    if prefix is not None and via_vault:
        raise click.UsageError(
            "--via-vault rotates one PATH: a mass rotation is queued by the CLI with a ledger "
            "entry per secret (drop --via-vault)"
        )
    if prefix is None and concurrency is not None:
        raise click.UsageError("--concurrency applies to --prefix only")
    if via_vault and grace is not None:
        raise click.UsageError(
            "--grace cannot be combined with --via-vault: ScaiVault's rotation policy sets the "
            "grace period of the event it fires"
        )
    with guarded(as_json):
        oc = session(naming=dry_run)
        acting = who(actor)
        if dry_run:
            _dry_run(oc, path, prefix, grace, as_json)
            return
        if prefix is not None:
            rotate_prefix(oc, prefix, acting, grace, reason, yes, concurrency, timeout, as_json)
            return
        assert path is not None
        from orchestrator.cli import trigger

        request = trigger.request_rotation(
            oc, path, grace=grace, reason=reason, actor=acting, via_vault=via_vault
        )
        if not wait:
            emit(
                {"path": path, "from_version": request.from_version, "queued": True,
                 "via": request.via, "actor": acting},
                as_json,
                lambda d: f"rotation of {path} requested (from version {d['from_version']}, "
                f"via {d['via']}); watch it with `scaivault-rotator status {path}`",
            )  # fmt: skip
            return
        routed_here = trigger.describe_rule(oc, path)
        timeout = timeout or WAIT_SECONDS
        record = trigger.find_new_run(oc, request, timeout=min(timeout, 60.0))
        progress = Progress(as_json)
        try:
            record = trigger.follow(
                oc, record.rotation_id, timeout, progress.show, tick=progress.tick
            )
        finally:
            progress.done()
        finish(record, as_json, routed_here)


def _dry_run(
    oc: OnCall, path: str | None, prefix: str | None, grace: str | None, as_json: bool
) -> None:
    """``--dry-run``: plan and probe each path, change nothing; exit 1 if any would fail."""
    from orchestrator.cli import dry_run, wave

    planner = dry_run.DryRun(oc, grace)
    skipped: dict[str, Any] = {}
    if prefix is not None:
        planned = wave.plan(oc, prefix)
        show_plan(prefix, planned)
        if not planned.ready:
            fail(
                f"nothing to rotate under {prefix!r}", hint="check the prefix and the routing file"
            )
        plans = [planner.plan(p) for p in planned.ready]
        skipped = {"unrouted": planned.unrouted,
                   "busy": [{"path": p, "rotation_id": r, "state": s}
                            for p, r, s in planned.busy]}  # fmt: skip
    else:
        assert path is not None
        plans = [planner.plan(path)]
    failing = [item for item in plans if item.would_fail]
    if as_json:
        click.echo(dump_json({"dry_run": True, "paths": [item.as_dict() for item in plans],
                              "would_fail": len(failing), "skipped": skipped}))  # fmt: skip
    else:
        click.echo(dry_run.render(plans))
    if asked := oc.asked():
        click.echo(asked, err=True)
    if failing:
        if not as_json:
            for item in failing:
                click.echo(f"error: {item.path} would fail: {'; '.join(item.problems)}", err=True)
        sys.exit(EXIT_FAILED)
