"""``rotate --prefix``: a wave. Plan what is under the prefix, ask, queue every rotation with a
ledger entry, then watch them on one progress line until each is stored or failed, and account
for every routed secret at the end (exit 1 unless all rotated)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from orchestrator.cli.output import EXIT_FAILED, EXIT_USAGE, dump_json, fail

if TYPE_CHECKING:
    from orchestrator.cli import wave
    from orchestrator.cli.session import OnCall


def rotate_prefix(
    oc: OnCall,
    prefix: str,
    actor: str,
    grace: str | None,
    reason: str | None,
    yes: bool,
    concurrency: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    from orchestrator.cli import trigger, wave

    planned = wave.plan(oc, prefix)
    show_plan(prefix, planned)
    if not planned.ready:
        fail(f"nothing to rotate under {prefix!r}", hint="check the prefix and the routing file")
    if concurrency is not None:
        click.echo(
            f"note: --concurrency no longer paces the CLI; it asks the workers to run at most "
            f"{concurrency} of this batch at once per target (below the target's own budget)",
            err=True,
        )
    if not yes:
        if not sys.stdin.isatty():
            fail("a mass rotation needs confirmation", hint="pass --yes", exit_code=EXIT_USAGE)
        click.confirm(f"Rotate {len(planned.ready)} secret(s)?", abort=True)
    requests = [
        trigger.manual_request(
            path, None, grace=grace, reason=reason, actor=actor, max_concurrent=concurrency
        )
        for path in planned.ready
    ]
    try:
        ids = trigger.publish_manual(oc, requests)
    except trigger.PublishInterrupted as stop:
        fail(
            f"interrupted while queueing: {stop.queued} of {len(requests)} rotation(s) were "
            f"queued and go on (and perhaps {stop.chunk} more, the batch being sent)",
            hint=f"`scaivault-rotator status --prefix {prefix}` shows them; `rotate --prefix "
            f"{prefix}` again queues the rest (paths already rotating are left out)",
            exit_code=130,
        )
    meter: WaveMeter | None = None
    try:  # from the line that says Ctrl-C stops watching, it does
        click.echo(
            f"queued {len(ids)} rotation(s); Ctrl-C stops watching, not rotating "
            f"(follow with `scaivault-rotator status --prefix {prefix}`)",
            err=True,
        )
        meter = WaveMeter(len(ids), as_json)
        counted = watch_wave(oc, ids, meter, timeout, prefix)
    except KeyboardInterrupt:
        if meter is not None:
            meter.done()
        click.echo(
            f"stopped watching; the rotations go on. Follow them with "
            f"`scaivault-rotator status --prefix {prefix}`",
            err=True,
        )
        sys.exit(130)
    meter.done()
    _finish_wave(prefix, counted, planned, meter, as_json)


def show_plan(prefix: str, planned: wave.Plan) -> None:
    """The paths a wave would rotate (count and the first few) and those it leaves out."""
    click.echo(f"{len(planned.ready)} secret(s) under {prefix!r} will be rotated:", err=True)
    for line in _first(planned.ready, PLAN_SHOWN):
        click.echo(f"  {line}", err=True)
    if planned.unrouted:
        click.echo(f"{len(planned.unrouted)} skipped, no routing rule matches:", err=True)
        for line in _first(planned.unrouted, PLAN_SHOWN):
            click.echo(f"  {line}", err=True)
    if planned.busy:
        click.echo(f"{len(planned.busy)} skipped, a rotation holds them:", err=True)
        busy = [f"{path} ({rid} is {state})" for path, rid, state in planned.busy]
        for line in _first(busy, PLAN_SHOWN):
            click.echo(f"  {line}", err=True)


def _first(items: list[str], shown: int) -> list[str]:
    more = len(items) - shown
    return items[:shown] + ([f"... and {more} more"] if more > 0 else [])


#: How many paths of each kind the plan of a wave lists.
PLAN_SHOWN = 10
#: Seconds between reads of a wave's runs (the slower one while thousands are unfinished, so
#: the CLI leaves the CPU to workers on the same machine); seconds between plain progress lines.
WAVE_POLL = 0.5
WAVE_POLL_LARGE = 1.0
LARGE_WAVE = 2000
PLAIN_EVERY = 5.0


class WaveMeter:
    """A wave's progress: one rewritten line on a terminal, else a plain line every
    :data:`PLAIN_EVERY` seconds (on stderr with ``--json``), with the rate and an ETA."""

    def __init__(self, total: int, as_json: bool) -> None:
        import time

        self._clock = time.monotonic
        self.started = self._clock()
        self.total = total
        self.as_json = as_json
        self.live = sys.stdout.isatty() and not as_json
        self._last_plain = self.started

    def elapsed(self) -> float:
        return self._clock() - self.started

    def rate(self, finished: int) -> float:
        return finished / max(self.elapsed(), 1e-6)

    def line(self, counted: wave.Tally) -> str:
        rate = self.rate(counted.finished)
        left = self.total - counted.finished
        eta = f"ETA {_clock_text(left / rate)}" if rate > 0 and left else "ETA -"
        return f"[{self.elapsed():6.1f}s] {counted.line()} | {rate:.1f}/s, {eta}"

    def show(self, counted: wave.Tally, final: bool = False) -> None:
        if self.live:
            click.echo(f"\r\x1b[K{self.line(counted)}", nl=False, color=True)
        elif final or self._clock() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = self._clock()
            click.echo(self.line(counted), err=self.as_json)

    def done(self) -> None:
        if self.live:
            click.echo("", color=True)


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


def watch_wave(
    oc: OnCall, ids: list[str], meter: WaveMeter, timeout: float | None, prefix: str
) -> wave.Tally:
    """Read the wave's unfinished runs every :data:`WAVE_POLL` seconds until every one is
    stored or failed; finished runs are not read again."""
    import time

    from orchestrator.cli import wave

    unfinished: list[str] = list(ids)
    finished: list[wave.Run] = []
    while True:
        runs = wave.read_runs(oc, unfinished)
        going = [r for r in runs if r.column not in wave.ENDED]
        finished += [r for r in runs if r.column in wave.ENDED]
        unfinished = [r.rotation_id for r in going]
        counted = wave.tally([*finished, *going])
        meter.show(counted, final=not unfinished)
        if not unfinished:
            return counted
        if timeout is not None and meter.elapsed() > timeout:
            fail(
                f"{len(unfinished)} of {len(ids)} rotation(s) not finished after {timeout:.0f}s",
                hint=f"they go on; follow them with `scaivault-rotator status --prefix {prefix}`",
            )
        time.sleep(WAVE_POLL if len(unfinished) < LARGE_WAVE else WAVE_POLL_LARGE)


def _finish_wave(
    prefix: str, counted: wave.Tally, planned: wave.Plan, meter: WaveMeter, as_json: bool
) -> None:
    """Print what happened to every secret under the prefix (stored, failed, skipped and why);
    exit 1 unless every routed one stored."""
    if as_json:
        data = {
            "prefix": prefix, **counted.as_dict(), "seconds": round(meter.elapsed(), 2),
            "rate_per_second": round(meter.rate(counted.finished), 2),
            "routed": counted.total + len(planned.busy),
            "skipped": {"unrouted": planned.unrouted,
                        "busy": [{"path": p, "rotation_id": r, "state": s}
                                 for p, r, s in planned.busy]},
        }  # fmt: skip
        click.echo(dump_json(data))
    else:
        for run in counted.failures[:PLAN_SHOWN]:
            click.echo(f"error: {run.path}: {run.state}: {run.last_error or '-'}", err=True)
        if len(counted.failures) > PLAN_SHOWN:
            more = len(counted.failures) - PLAN_SHOWN
            click.echo(f"... and {more} more failed (`status --prefix {prefix} --json`)", err=True)
        busy = [f"{path} ({rid} is {state})" for path, rid, state in planned.busy]
        for line in _first(busy, PLAN_SHOWN):
            click.echo(f"skipped: {line}: a rotation already holds it", err=True)
        click.echo(_wave_line(counted, planned, meter))
    if counted.counts["stored"] != counted.total or planned.busy:
        if not as_json and planned.busy:
            click.echo(
                f"next: when the rotations holding them end (`scaivault-rotator status "
                f"--prefix {prefix}`), `rotate --prefix {prefix}` again rotates the ones left "
                "(or `rotate PATH` each)",
                err=True,
            )
        sys.exit(EXIT_FAILED)


def _wave_line(counted: wave.Tally, planned: wave.Plan, meter: WaveMeter) -> str:
    """``3 of 5 routed secret(s) rotated (stored), 1 failed, 1 skipped (busy) in 2.0s ...``."""
    routed = counted.total + len(planned.busy)
    line = (
        f"{counted.counts['stored']} of {routed} routed secret(s) rotated (stored), "
        f"{counted.counts['failed']} failed, {len(planned.busy)} skipped (busy: a rotation "
        f"holds it) in {meter.elapsed():.1f}s ({meter.rate(counted.finished):.1f}/s)"
    )
    if planned.unrouted:
        line += f"; {len(planned.unrouted)} not routed (no rule), left alone"
    return line
