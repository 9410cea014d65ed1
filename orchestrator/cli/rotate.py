"""``rotate``: one path now (``--wait`` follows it to grace), or every routed secret under a
prefix; and how a followed rotation is shown while it runs and when it ends."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

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
    EXIT_USAGE,
    dump_json,
    emit,
    fail,
    guarded,
    render_record,
)
from orchestrator.cli.situation import Situation, hint

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall
    from orchestrator.state.records import RunRecord


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
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits.")
@click.option("--grace", callback=duration, help="Grace period, e.g. 48h (default: the rule's).")
@reason_option
@actor_option
@click.option("--via-vault", is_flag=True, help="Ask ScaiVault to fire rotation.due instead.")
@click.option("--yes", is_flag=True, help="Do not ask before a mass rotation.")
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="How many rotations of a mass rotation run at a time.",
)
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
        oc = session()
        acting = who(actor)
        if prefix is not None:
            _rotate_prefix(
                oc, prefix, acting, grace, reason, via_vault, yes, concurrency, timeout, as_json
            )
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
        record = trigger.find_new_run(oc, request, timeout=min(timeout, 60.0))
        progress = Progress(as_json)
        try:
            record = trigger.follow(
                oc, record.rotation_id, timeout, progress.show, tick=progress.tick
            )
        finally:
            progress.done()
        finish(record, as_json, routed_here)


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
