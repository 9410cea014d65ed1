"""Benchmark: emergency mass rotation (``rotate --prefix``) — wall time and the in-flight limit.

Run from the repository root (starts its own redis-server, the ScaiVault emulator and one
prefork worker with two processes)::

    python -m tests.benchmarks.bench_mass_rotation [--secrets 10000] [--concurrency 16]
        [--baseline 2000]

1. Baseline: ``--baseline`` ``scaivault.rotate`` tasks enqueued at once (unpaced, what the
   workers can do at most); time until all are stored.
2. ``scaivault-rotator rotate --prefix bench/mass/ --yes --concurrency N`` over ``--secrets``
   secrets, as on-call would run it; wall time of the command.
3. The limit: from each path's history, the interval from ``rotation_requested`` (the CLI,
   before it enqueues) to ``rotation_stored`` (the worker) lies inside the CLI's in-flight slot,
   so the most intervals open at one moment must not exceed ``--concurrency``. Every secret
   routes to the same rotator and target, so this is the per-target limit.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import datetime

from celery import Celery

from orchestrator.local.processes import cli_argv
from orchestrator.state import history, keys
from tests.benchmarks.rig import ROOT, Rig, machine, table, wait_until


def unpaced(rig: Rig, paths: list[str]) -> float:
    """Enqueue one manual rotation per path at once; seconds until all are stored."""
    before = rig.outcome("stored")
    producer = Celery("bench-producer", broker=rig.redis_server.url, set_as_current=False)
    producer.conf.update(task_serializer="json", accept_content=["json"])
    started = time.perf_counter()
    with producer.connection_for_write() as conn:
        for path in paths:
            producer.send_task(
                "scaivault.rotate",
                kwargs={"path": path, "trigger": "manual", "event_id": None, "from_version": 1,
                        "grace_period": None, "actor": "bench", "reason": "baseline"},
                queue=keys.TASK_QUEUE, connection=conn,
            )  # fmt: skip
    wait_until(
        lambda: rig.outcome("stored") - before >= len(paths), 7200, "the baseline rotations", 0.05
    )
    return time.perf_counter() - started


def paced(rig: Rig, prefix: str, concurrency: int) -> tuple[float, int, str]:
    """Run ``rotate --prefix``; (seconds, exit code, last line of its stdout)."""
    out = rig.dir / "rotate-prefix.out"
    started = time.perf_counter()
    with out.open("w") as sink:
        done = subprocess.run(
            cli_argv("rotate", "--prefix", prefix, "--yes", "--concurrency", str(concurrency),
                     "--timeout", "600"),
            env=rig.env(), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    lines = out.read_text(errors="replace").strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def most_in_flight(rig: Rig, paths: list[str]) -> tuple[int, int]:
    """(most requested-but-not-stored rotations at one moment, paths with both entries)."""
    edges: list[tuple[float, int]] = []
    complete = 0
    for path in paths:
        entries = history.read(rig.redis, path, limit=100)
        requested = [e["ts"] for e in entries if e["event"] == "rotation_requested"]
        stored = [e["ts"] for e in entries if e["event"] == "rotation_stored"]
        if not (requested and stored):
            continue
        complete += 1
        edges.append((_epoch(requested[0]), 1))
        edges.append((_epoch(stored[-1]), -1))
    most = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # a close before an open
        current += step
        most = max(most, current)
    return most, complete


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline", type=int, default=2_000)
    args = parser.parse_args()

    rig = Rig()
    try:
        rig.emulator()
        base = [f"bench/base/s{i:06d}" for i in range(args.baseline)]
        mass = [f"bench/mass/s{i:06d}" for i in range(args.secrets)]
        seeded = rig.seed(base + mass)
        print(f"seeded {len(base) + len(mass)} secrets in {seeded:.1f}s", flush=True)
        rig.worker(concurrency=2)

        base_s = unpaced(rig, base) if base else 0.0
        print(f"baseline: {len(base)} stored in {base_s:.1f}s", flush=True)
        mass_s, code, summary = paced(rig, "bench/mass/", args.concurrency)
        print(f"rotate --prefix: exit {code} after {mass_s:.1f}s: {summary}", flush=True)
        stored = rig.outcome("stored") - len(base)
        most, complete = most_in_flight(rig, mass)

        print()
        print(f"machine: {machine()}; worker: 1 node, 2 prefork processes")
        rows = []
        if base:
            rows.append([f"unpaced: {len(base)} tasks enqueued at once (baseline)", len(base),
                         f"{base_s:.1f}", f"{len(base) / base_s:.1f}", "-"])  # fmt: skip
        rows.append([f"rotate --prefix --concurrency {args.concurrency}", stored,
                     f"{mass_s:.1f}", f"{stored / mass_s:.1f}", str(most)])  # fmt: skip
        print(table(rows, ["run", "stored", "wall s", "per second", "most in flight"]))
        held = most <= args.concurrency and complete == args.secrets
        print(f"limit {args.concurrency}: {'held' if held else 'NOT held'} "
              f"(most in flight {most}, measured on {complete} of {args.secrets} paths); "
              f"CLI exit code {code}")  # fmt: skip
    except BaseException:
        rig.close(keep_logs=True)
        raise
    rig.close()


if __name__ == "__main__":
    main()
