"""Benchmark: emergency mass rotation (``rotate --prefix``) against the unpaced rate of the same
workers, measured in the same run; optionally, no rotation lost when a worker is SIGKILLed.

Run from the repository root (starts its own redis-server, the ScaiVault emulator and one
prefork worker with ``--processes`` processes; every secret of the waves routes to one target
with a budget, the baseline's to the same rotator without one)::

    python -m tests.benchmarks.bench_mass_rotation [--secrets 10000] [--baseline 2000]
        [--budget 16] [--rounds 1] [--kill 2000] [--processes 2] [--busy-ms 0]
        [--rotator test-ledger|random-password]

The rotator is the test ledger issuer by default (``tests/rotators/ledger.py``: it touches a
target, so every rotation takes and gives back a slot of the budget; ``--busy-ms`` makes each
of its steps take that long and count itself busy on the target, which then reports the most
steps it saw at once). ``random-password`` is vault-only: it takes no slot at all.

1. Baseline: ``--baseline`` ``scaivault.rotate`` tasks enqueued at once with Celery's producer
   (no ledger, no CLI, no budget: what the workers can do at most); time until all are stored.
2. ``scaivault-rotator rotate --prefix bench/mass/ --yes --json`` over ``--secrets`` secrets, as
   on-call would run it: every rotation queued at once with a ledger entry, then watched to the
   end; wall time of the command, and its rate as a fraction of the baseline's. ``--rounds R``
   alternates the two R times (fresh secrets each round) and adds the totals.
3. In flight: from each path's history, the most runs between ``rotation_started`` and
   ``rotation_stored`` at one moment (an upper bound of the target's slots in use; the workers
   enforce ``--budget``, not the CLI).
4. ``--kill N``: another wave of N secrets with beat running; once a quarter is stored the
   worker is SIGKILLed (its whole process group) and a new one started. Every secret must end
   with exactly one new version, and the CLI must exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from orchestrator.local.processes import cli_argv
from orchestrator.state import history
from tests.benchmarks.bench_budget import Target
from tests.benchmarks.rig import ROOT, Rig, machine, table, wait_until
from tests.fixtures.plugins import plugin_env, write_dist_info

LEDGER = "test-ledger"
#: The baseline's paths have no budget; every other path shares one target and its budget.
ROUTING = """[[rules]]
match = "bench/base*/**"
rotator = "{rotator}"
grace_period = "48h"
{options}
[[rules]]
match = "bench/**"
rotator = "{rotator}"
grace_period = "48h"
target = "bench-target"
max_concurrent = {budget}
{options}"""


def routing(rotator: str, budget: int, target_url: str, busy_ms: int) -> str:
    if rotator == LEDGER:
        options = f'[rules.options]\ntarget_url = "{target_url}"\nbusy_ms = {busy_ms}\n'
    else:
        options = "[rules.options]\nlength = 24\n"
    return ROUTING.format(rotator=rotator, budget=budget, options=options)


def wave(rig: Rig, prefix: str, name: str) -> tuple[float, int, dict[str, object]]:
    """Run ``rotate --prefix --yes --json``; (seconds, exit code, its final counts)."""
    out = rig.dir / f"{name}.out"
    started = time.perf_counter()
    with out.open("w") as sink, (rig.dir / f"{name}.err").open("w") as errors:
        done = subprocess.run(
            cli_argv("rotate", "--prefix", prefix, "--yes", "--json"),
            env=rig.env(), cwd=ROOT, stdout=sink, stderr=errors, check=False,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    text = out.read_text(errors="replace").strip()
    return seconds, done.returncode, json.loads(text) if text.startswith("{") else {}


def killed_wave(
    rig: Rig, prefix: str, paths: list[str], processes: int, rotator: str
) -> tuple[float, int, dict[str, object]]:
    """:func:`wave` while the worker is SIGKILLed once a quarter of ``paths`` is stored."""
    out = rig.dir / "killed.out"
    before = rig.outcome("stored", rotator)
    started = time.perf_counter()
    with out.open("w") as sink, (rig.dir / "killed.err").open("w") as errors:
        running = subprocess.Popen(
            cli_argv("rotate", "--prefix", prefix, "--yes", "--json"),
            env=rig.env(), cwd=ROOT, stdout=sink, stderr=errors,
        )  # fmt: skip
        quarter = len(paths) // 4
        wait_until(lambda: rig.outcome("stored", rotator) - before >= quarter, 600, "a quarter")
        victim = rig.workers.pop()
        os.killpg(os.getpgid(victim.pid), signal.SIGKILL)
        rig.worker(name="w2", concurrency=processes)
        code = running.wait(timeout=3600)
    seconds = time.perf_counter() - started
    text = out.read_text(errors="replace").strip()
    return seconds, code, json.loads(text) if text.startswith("{") else {}


def one_new_version_each(rig: Rig, paths: list[str]) -> int:
    """How many of ``paths`` have exactly one ``rotation_stored`` in their history."""
    return sum(
        len([e for e in history.read(rig.redis, p, 100) if e["event"] == "rotation_stored"]) == 1
        for p in paths
    )


def most_in_flight(rig: Rig, paths: list[str]) -> tuple[int, int]:
    """(most started-but-not-stored rotations at one moment, paths with both entries)."""
    edges: list[tuple[float, int]] = []
    complete = 0
    for path in paths:
        entries = history.read(rig.redis, path, limit=100)
        started = [e["ts"] for e in entries if e["event"] == "rotation_started"]
        stored = [e["ts"] for e in entries if e["event"] == "rotation_stored"]
        if not (started and stored):
            continue
        complete += 1
        edges.append((_epoch(started[0]), 1))
        edges.append((_epoch(stored[-1]), -1))
    most = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # a close before an open
        current += step
        most = max(most, current)
    return most, complete


def _row(
    name: str, stored: int, seconds: float, unpaced: float | None, most: str, peak: str = "-"
) -> list[object]:
    """A table row; ``unpaced``: the baseline's rate this row is a fraction of."""
    rate = stored / seconds
    share = "1.00x" if unpaced is None else f"{rate / unpaced:.2f}x"
    return [name, stored, f"{seconds:.1f}", f"{rate:.1f}", share, most, peak]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=2_000)
    parser.add_argument("--budget", type=int, default=16, help="max_concurrent of the target")
    parser.add_argument("--kill", type=int, default=0, help="secrets of the SIGKILL wave")
    parser.add_argument("--rounds", type=int, default=1, help="baseline and wave, alternated")
    parser.add_argument("--processes", type=int, default=2, help="the worker's processes")
    parser.add_argument("--busy-ms", type=int, default=0, help="each ledger step's latency")
    parser.add_argument("--rotator", choices=(LEDGER, "random-password"), default=LEDGER)
    args = parser.parse_args()

    plugins = write_dist_info(
        Path(tempfile.mkdtemp(prefix="svr-bench-plugins-")),
        {LEDGER: "tests.rotators.ledger:LedgerIssuer"},
    )
    # Short timeouts so the SIGKILL wave's lost messages come back within a minute.
    rig = Rig(ROTATOR_PENDING_REPUBLISH_AFTER="5", ROTATOR_VISIBILITY_TIMEOUT="60",
              ROTATOR_TASK_TIME_LIMIT="30", ROTATOR_SWEEP_INTERVAL="1",
              PYTHONPATH=plugin_env(plugins, {"PYTHONPATH": str(ROOT)})["PYTHONPATH"])  # fmt: skip
    target_url = rig.redis_server.url.rsplit("/", 1)[0] + "/1"
    rig.routing.write_text(routing(args.rotator, args.budget, target_url, args.busy_ms))
    target = Target(target_url)
    counted = args.rotator == LEDGER and args.busy_ms > 0
    with rig:  # closed at the end; its logs kept if the run fails
        rig.emulator()
        rounds = range(args.rounds)
        base = [[f"bench/base{r}/s{i:06d}" for i in range(args.baseline)] for r in rounds]
        mass = [[f"bench/mass{r}/s{i:06d}" for i in range(args.secrets)] for r in rounds]
        kill = [f"bench/kill/s{i:06d}" for i in range(args.kill)]
        every = [p for r in rounds for p in base[r] + mass[r]] + kill
        seeded = rig.seed(every)
        print(f"seeded {len(every)} secrets in {seeded:.1f}s", flush=True)
        rig.worker(concurrency=args.processes)

        rows: list[list[object]] = []
        totals = [0, 0.0, 0, 0.0]  # baseline stored, seconds; wave stored, seconds
        code, most, complete = 0, 0, 0
        for r in rounds:  # alternated, so a noisy neighbour spoils both sides alike
            target.reset()
            base_s = rig.rotate_all(base[r], args.rotator, "baseline")
            base_peak = str(target.peak()) if counted else "-"
            target.reset()
            mass_s, code, counts = wave(rig, f"bench/mass{r}/", f"wave{r}")
            mass_peak = str(target.peak()) if counted else "-"
            stored = int(str(counts.get("stored", 0)))
            print(f"round {r + 1}: baseline {len(base[r])} in {base_s:.1f}s; rotate --prefix "
                  f"exit {code}, {stored} stored in {mass_s:.1f}s", flush=True)  # fmt: skip
            round_most, round_complete = most_in_flight(rig, mass[r])
            most, complete = max(most, round_most), complete + round_complete
            rows += [_row(f"{r + 1}: unpaced, {args.baseline} tasks at once", len(base[r]),
                          base_s, None, "-", base_peak),
                     _row(f"{r + 1}: rotate --prefix (budget {args.budget})", stored, mass_s,
                          len(base[r]) / base_s, str(round_most), mass_peak)]  # fmt: skip
            totals = [totals[0] + len(base[r]), totals[1] + base_s,
                      totals[2] + stored, totals[3] + mass_s]  # fmt: skip
        if args.rounds > 1:
            rows += [_row("all: unpaced", int(totals[0]), totals[1], None, "-"),
                     _row("all: rotate --prefix", int(totals[2]), totals[3],
                          totals[0] / totals[1], str(most))]  # fmt: skip
        if kill:
            rig.beat()
            kill_s, kill_code, kill_counts = killed_wave(
                rig, "bench/kill/", kill, args.processes, args.rotator
            )
            once = one_new_version_each(rig, kill)
            killed = int(str(kill_counts.get("stored", 0)))
            rows.append(["rotate --prefix, worker SIGKILLed at 25%", killed, f"{kill_s:.1f}",
                         f"{killed / kill_s:.1f}", "-", "-", "-"])  # fmt: skip

        print()
        print(
            f"machine: {machine()}; worker: 1 node, {args.processes} prefork processes; "
            f"rotator {args.rotator}" + (f", each step {args.busy_ms} ms" if counted else "")
        )
        head = ["run", "stored", "wall s", "per second", "of unpaced", "most in flight",
                "most at target"]  # fmt: skip
        print(table(rows, head))
        print(f"CLI exit code {code} (last round); in flight measured on {complete} of "
              f"{args.secrets * args.rounds} paths")  # fmt: skip
        if kill:
            print(f"SIGKILL wave: CLI exit code {kill_code}; {once} of {len(kill)} secrets with "
                  f"exactly one new version; {kill_counts.get('failed')} failed")  # fmt: skip


if __name__ == "__main__":
    main()
