"""Benchmark: target budgets — a finalization wave and a webhook burst, each paced by a target's
``max_concurrent`` and against the unpaced baseline (no budget) in the same run.

Run from the repository root (starts its own redis-server, the ScaiVault emulator, the
receiver, one prefork worker with ``--processes`` processes and beat at its default 15 s sweep
interval)::

    python -m tests.benchmarks.bench_budget [--wave 2000] [--wave-budget 4] [--burst 2000]
        [--burst-budget 8] [--processes 12] [--busy-ms 20]

Every rotation goes to the test ledger issuer (``tests/rotators/ledger.py``, its target a Redis
database of the rig's): each of its steps takes ``--busy-ms`` (a target's latency) and counts
itself busy on the target, so the target itself reports the most steps it saw at once.

1. Wave: ``--wave`` rotations are rotated to grace (48 h), then their grace is made to end
   together (every run's ``finalize_after_ms`` and due entry set to one moment on Redis's
   clock). Measured from that moment: when the first sweep claimed some (beat's tick), when
   the sweep had dispatched every due entry, when all were ``done`` (and the rate from the
   first sweep on), the most steps at the target at once, and the worker's memory (all its
   processes) before and at most during the wave. Unpaced (no budget), then ``--wave-budget``.
2. Burst: ``--burst`` signed ``rotation.due`` webhooks POSTed to the receiver at once (64
   connections); time until all are stored and the most steps at the target at once. Unpaced,
   then ``--burst-budget``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis

from orchestrator.state import keys
from tests.benchmarks.bench_e2e import post_all
from tests.benchmarks.rig import ROOT, Rig, machine, rss_mb, table, wait_until
from tests.fixtures.plugins import plugin_env, write_dist_info
from tests.rotators.ledger import busy_key

ROTATOR = "test-ledger"
RULE = """[[rules]]
match = "bench/{name}/**"
rotator = "test-ledger"
grace_period = "48h"
{budget}[rules.options]
target_url = "{target_url}"
busy_ms = {busy_ms}

"""


def routing(target_url: str, busy_ms: int, budgets: dict[str, int | None]) -> str:
    """One rule per scenario: ``bench/<name>/**``, with its budget (None: unpaced)."""
    out = []
    for name, limit in budgets.items():
        budget = "" if limit is None else f'target = "bench-{name}"\nmax_concurrent = {limit}\n'
        out.append(RULE.format(name=name, budget=budget, target_url=target_url, busy_ms=busy_ms))
    return "".join(out)


class Target:
    """The ledger's Redis: how many steps are busy on it now and at most."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)

    def reset(self) -> None:
        self.client.delete(busy_key("now"), busy_key("peak"))

    def peak(self) -> int:
        return int(self.client.zscore(busy_key("peak"), "peak") or 0)


def end_grace_now(rig: Rig, paths: list[str]) -> int:
    """Make every path's run due now on Redis's clock; the due time in ms."""
    seconds, micros = rig.redis.time()
    due_ms = seconds * 1000 + micros // 1000
    pipe = rig.redis.pipeline(transaction=False)
    for path in paths:
        pipe.get(keys.last(path))
    ids = [i.decode() for i in pipe.execute()]
    for rid in ids:
        pipe.hset(keys.run(rid), "finalize_after_ms", due_ms)
        pipe.zadd(keys.DUE, {rid: due_ms})
    pipe.execute()
    return int(due_ms)


def wave(rig: Rig, target: Target, paths: list[str]) -> list[str]:
    """One finalization wave; the table row's cells."""
    rig.rotate_all(paths, ROTATOR, "wave")
    target.reset()
    worker = rig.workers[0]
    rss_before = rss_mb(worker)
    before = rig.outcome("done", ROTATOR)
    due_ms = end_grace_now(rig, paths)
    started = time.perf_counter()
    first = dispatched = None
    rss_most = rss_before
    while rig.outcome("done", ROTATOR) - before < len(paths):
        left = rig.redis.zcount(keys.DUE, "-inf", due_ms)
        if first is None and left < len(paths):
            first = time.perf_counter() - started
        if dispatched is None and left == 0:
            dispatched = time.perf_counter() - started
        rss_most = max(rss_most, rss_mb(worker))
        if time.perf_counter() - started > 3600:
            raise SystemExit("benchmark aborted: the wave did not finish in an hour")
        time.sleep(0.2)
    done = time.perf_counter() - started
    first = first or 0.0
    return [f"{first:.1f}", f"{dispatched or done:.1f}", f"{done:.1f}",
            f"{len(paths) / max(done - first, 0.001):.0f}", str(target.peak()),
            f"{rss_before:.0f} -> {rss_most:.0f}"]  # fmt: skip


def burst(rig: Rig, target: Target, url: str, paths: list[str]) -> list[str]:
    """One webhook burst; the table row's cells."""
    target.reset()
    before = rig.outcome("stored", ROTATOR)
    started = time.perf_counter()
    statuses = asyncio.run(post_all(url, paths))
    accepted = time.perf_counter() - started
    if any(s != 202 for s in statuses):
        raise SystemExit(f"the receiver refused events: {sorted(set(statuses))}")
    wait_until(lambda: rig.outcome("stored", ROTATOR) - before >= len(paths), 3600, "burst", 0.05)
    stored = time.perf_counter() - started
    return [f"{accepted:.1f}", f"{stored:.1f}", f"{len(paths) / stored:.0f}", str(target.peak())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wave", type=int, default=2_000)
    parser.add_argument("--wave-budget", type=int, default=4)
    parser.add_argument("--burst", type=int, default=2_000)
    parser.add_argument("--burst-budget", type=int, default=8)
    parser.add_argument("--processes", type=int, default=12)
    parser.add_argument("--busy-ms", type=int, default=20)
    args = parser.parse_args()

    plugins_dir = Path(tempfile.mkdtemp(prefix="svr-bench-plugins-"))
    plugins = write_dist_info(plugins_dir, {ROTATOR: "tests.rotators.ledger:LedgerIssuer"})
    rig = Rig(PYTHONPATH=plugin_env(plugins, {"PYTHONPATH": str(ROOT)})["PYTHONPATH"])
    with rig:  # closed at the end; its logs kept if the run fails
        target_url = rig.redis_server.url.rsplit("/", 1)[0] + "/1"
        budgets = {"wave-unpaced": None, "wave-paced": args.wave_budget,
                   "burst-unpaced": None, "burst-paced": args.burst_budget}  # fmt: skip
        rig.routing.write_text(routing(target_url, args.busy_ms, budgets))
        target = Target(target_url)
        rig.emulator()
        sizes = {"wave-unpaced": args.wave, "wave-paced": args.wave,
                 "burst-unpaced": args.burst, "burst-paced": args.burst}  # fmt: skip
        paths = {name: [f"bench/{name}/s{i:06d}" for i in range(n)] for name, n in sizes.items()}
        seeded = rig.seed([p for group in paths.values() for p in group])
        print(f"seeded {sum(len(g) for g in paths.values())} secrets in {seeded:.1f}s", flush=True)
        rig.worker(concurrency=args.processes)
        rig.beat()
        url = rig.receiver()

        waves = []
        for name, label in (("wave-unpaced", "unpaced (no budget)"),
                            ("wave-paced", f"max_concurrent = {args.wave_budget}")):  # fmt: skip
            waves.append([label, str(args.wave), *wave(rig, target, paths[name])])
            print("wave:", waves[-1], flush=True)
        bursts = []
        for name, label in (("burst-unpaced", "unpaced (no budget)"),
                            ("burst-paced", f"max_concurrent = {args.burst_budget}")):  # fmt: skip
            bursts.append([label, str(args.burst), *burst(rig, target, url, paths[name])])
            print("burst:", bursts[-1], flush=True)
        waits = rig.workers[0].log_tail(1 << 30).count('"event": "slot_wait"')

        print()
        print(f"machine: {machine()}; worker: 1 node, {args.processes} prefork processes; "
              f"beat sweeps every 15 s (default); each ledger step {args.busy_ms} ms")  # fmt: skip
        print("finalization wave (grace of every run ends at one moment):")
        head = ["run", "runs", "first sweep s", "all dispatched s", "all done s",
                "done per s after first sweep", "most at target at once",
                "worker RSS MiB (before -> most)"]  # fmt: skip
        print(table(waves, head))
        print("webhook burst (signed rotation.due, 64 connections):")
        print(table(bursts, ["run", "events", "all accepted s", "all stored s", "per second",
                             "most at target at once"]))  # fmt: skip
        print(f"runs that waited for a slot (slot_wait log lines): {waits}")


if __name__ == "__main__":
    main()
