"""Benchmark: rotations waiting out their grace period, due-queue vs Celery countdown tasks.

Run from the repository root (starts its own redis-server, one prefork worker with two
processes and beat; the visibility timeout is set to its minimum, 60 s, so redelivery shows
within the run)::

    python -m tests.benchmarks.bench_grace [--waiting 100000] [--due 10000] [--observe 300]

A. The product's way: ``--waiting`` entries in the due-queue (a Redis sorted set), ``--due`` of
   them already due. The worker's memory is sampled before and while beat sweeps; the sweep of
   the due entries is timed in Redis (``INFO commandstats``: microseconds Redis spent in the
   claim script) both as one claim of ``--due`` entries and as the product's batches of 500.
B. The baseline the protocol forbids (docs/architecture.md#the-protocol, step 6): the same number of
   ``bench.noop`` tasks published with a 48 h countdown to the same worker. For ``--observe``
   seconds after publishing, every 30 s: the worker's memory, the queue, the broker's unacked
   messages, and the deliveries counted from the worker's ``Task ... received`` log lines (beyond
   one per task: redeliveries).
"""

from __future__ import annotations

import argparse
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from orchestrator.engine.sweep import DUE_BATCH
from orchestrator.local.processes import ChildProcess
from orchestrator.state import keys
from orchestrator.state.due import DueQueue
from tests.benchmarks.rig import Rig, machine, rss_mb, table

#: The product's sweep claims due entries this many per script call, until none is left.
SWEEP_LIMIT = DUE_BATCH
_RECEIVED = re.compile(r"Task bench\.noop\[([0-9a-f-]{36})\] received")


def script_usec(rig: Rig) -> tuple[int, int]:
    """(calls, microseconds) Redis spent in scripts since the last ``CONFIG RESETSTAT``."""
    stats = rig.redis.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in stats:
            calls += int(stats[name]["calls"])
            usec += int(stats[name]["usec"])
    return calls, usec


def fill_due_queue(rig: Rig, first: int, last: int) -> float:
    """Add entries ``first`` to ``last - 1``, due in 48 h; returns seconds taken."""
    now_ms = int(time.time() * 1000)
    started = time.perf_counter()
    pipe = rig.redis.pipeline(transaction=False)
    for i in range(first, last):
        score = now_ms + 48 * 3600 * 1000 + i
        pipe.zadd(keys.DUE, {f"rot-bench{i:08d}": score})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def time_sweeps(rig: Rig, due: int) -> list[list[Any]]:
    """Claim every due entry once in one call, and again (after resetting) in the sweep's
    batches."""
    queue = DueQueue(rig.redis)
    lease_ms = 300_000
    rows: list[list[Any]] = []
    for label, limit in ((f"one claim of {due}", due), (f"batches of {SWEEP_LIMIT}", SWEEP_LIMIT)):
        _reset_due(rig, due)
        rig.redis.config_resetstat()
        started = time.perf_counter()
        claimed = 0
        while claimed < due:
            got = queue.claim(lease_ms, limit)
            if not got:
                break
            claimed += len(got)
        wall = time.perf_counter() - started
        calls, usec = script_usec(rig)
        rows.append([label, claimed, calls, f"{usec / 1000:.1f}", f"{wall * 1000:.0f}"])
    return rows


def _reset_due(rig: Rig, due: int) -> None:
    now_ms = int(time.time() * 1000)
    pipe = rig.redis.pipeline(transaction=False)
    for i in range(due):
        pipe.zadd(keys.DUE, {f"rot-bench{i:08d}": now_ms - 60_000})
    pipe.execute()


def sample(worker: ChildProcess, seconds: float, every: float = 5.0) -> list[float]:
    """The worker's RSS every ``every`` seconds for ``seconds``."""
    out = [rss_mb(worker)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every)
        out.append(rss_mb(worker))
    return out


class Deliveries:
    """Counts ``bench.noop`` deliveries in the worker's log, reading only what is new."""

    def __init__(self, worker: ChildProcess) -> None:
        self.path = worker.log_path
        self.offset = 0
        self.seen: set[str] = set()
        self.total = 0

    def redeliveries(self) -> int:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # leave a half-written line for next time
        self.offset += complete
        ids = _RECEIVED.findall(chunk[:complete].decode(errors="replace"))
        self.total += len(ids)
        self.seen.update(ids)
        return self.total - len(self.seen)


def countdown_baseline(
    rig: Rig, worker: ChildProcess, n: int, observe: float
) -> tuple[list[list[Any]], float]:
    """Publish ``n`` 48 h countdown tasks, then sample for ``observe`` seconds."""
    producer = Celery("bench-producer", broker=rig.redis_server.url, set_as_current=False)
    producer.conf.update(task_serializer="json", accept_content=["json"])
    deliveries = Deliveries(worker)
    rows: list[list[Any]] = [_row(rig, worker, deliveries, "before publishing")]
    started = time.perf_counter()

    def publish(first: int) -> None:  # eight publishers: each send is one round trip
        with producer.connection_for_write() as conn:
            for i in range(first, n, 8):
                producer.send_task(
                    "bench.noop", kwargs={"path": f"bench/grace/s{i}", "rotation_id": f"rot-{i}"},
                    countdown=48 * 3600, queue=keys.TASK_QUEUE, connection=conn,
                )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(publish, range(8)))
    rows.append(
        _row(rig, worker, deliveries, f"published (t = {time.perf_counter() - started:.0f}s)")
    )
    print(f"countdown tasks published in {time.perf_counter() - started:.0f}s", flush=True)
    end = time.monotonic() + observe
    while time.monotonic() < end:
        time.sleep(min(30.0, max(end - time.monotonic(), 0.1)))
        rows.append(_row(rig, worker, deliveries, f"t = {time.perf_counter() - started:.0f}s"))
    redis_mb = float(rig.redis.info("memory")["used_memory"]) / 2**20
    return rows, redis_mb


def _row(rig: Rig, worker: ChildProcess, deliveries: Deliveries, label: str) -> list[Any]:
    return [label, f"{rss_mb(worker):.0f}", rig.redis.llen(keys.TASK_QUEUE),
            rig.redis.hlen("unacked"), deliveries.redeliveries()]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--observe", type=float, default=300.0, help="seconds after publishing")
    args = parser.parse_args()

    rig = Rig(
        ROTATOR_VISIBILITY_TIMEOUT="60",
        ROTATOR_TASK_TIME_LIMIT="30",
        ROTATOR_SWEEP_INTERVAL="2",
    )
    with rig:  # closed at the end; its logs kept if the run fails
        rig.vault_url = "http://127.0.0.1:9"  # nothing here talks to ScaiVault
        worker = rig.worker(concurrency=2)
        idle = sample(worker, 6, 2)
        print("A: filling the due-queue", flush=True)
        filled = fill_due_queue(rig, args.due, args.waiting)
        beat = rig.beat()
        waiting = sample(worker, 20, 5)
        beat.stop()  # the timed sweeps below must not race beat's
        due_mb = int(rig.redis.memory_usage(keys.DUE) or 0) / 2**20
        sweep_rows = time_sweeps(rig, args.due)
        rig.redis.delete(keys.DUE)  # beat must not hand the bench's fake ids to the worker

        rows, redis_mb = countdown_baseline(rig, worker, args.waiting, args.observe)

        print()
        print(f"machine: {machine()}; worker: 1 node, 2 prefork processes; visibility 60 s")
        print(f"A. due-queue: {args.waiting - args.due} future entries added in {filled:.1f}s; "
              f"{due_mb:.1f} MiB in Redis")  # fmt: skip
        print(table([["idle", f"{min(idle):.0f}", f"{max(idle):.0f}"],
                     [f"{args.waiting - args.due} waiting, beat sweeping every 2 s",
                      f"{min(waiting):.0f}", f"{max(waiting):.0f}"]],
                    ["worker state", "RSS min MiB", "RSS max MiB"]))  # fmt: skip
        print()
        print(f"sweep of {args.due} due entries (Redis time = time Redis spent in the script):")
        print(table(sweep_rows, ["how", "claimed", "script calls", "Redis ms", "wall ms"]))
        print()
        print(f"B. baseline: {args.waiting} tasks with a 48 h countdown on the same worker; "
              f"Redis holds {redis_mb:.0f} MiB afterwards")  # fmt: skip
        print(table(rows, ["moment", "worker RSS MiB", "queued", "unacked", "redeliveries"]))


if __name__ == "__main__":
    main()
