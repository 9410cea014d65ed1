"""Benchmark: rotations per second end to end, against a no-op Celery task on the same workers.

Run from the repository root (starts its own redis-server, the ScaiVault emulator, the receiver
and one prefork worker with ``--workers`` processes)::

    python -m tests.benchmarks.bench_e2e [--secrets 10000] [--workers 2] [--rounds 3]
                                         [--profile 300]

1. Baseline: ``--secrets`` ``bench.noop`` tasks (keyword arguments sized like
   ``scaivault.rotate``'s) pushed onto the queue at once; time until all ran.
2. Rotations: one signed ``rotation.due`` per secret POSTed to the receiver at once (64
   connections); time until every rotation is stored (``random-password``, the emulator as
   ScaiVault, grace 48h so nothing finalizes meanwhile).
   With ``--rounds N`` the two runs alternate N times (fresh secrets each round) and the ratio
   reported is the median of the rounds': on a shared VM the no-op rate, bound by latency,
   moves by a third from one minute to the next, so one pair of runs says little.
3. Where the time goes: CPU per message of every process in both runs (worker pool, Celery's
   consumer, redis-server, the emulator, the receiver) and how busy the cores were; Redis
   commands per message; the rotation steps' own wall time in the workers; and a cProfile of
   the engine rotating ``--profile`` more secrets in this process (no Celery), top functions
   by internal time.

Prints the rates, their ratio (goal: rotations at least a third of the no-op rate) and the
breakdowns.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import time
from datetime import UTC, datetime

import psutil  # type: ignore[import-untyped]

from orchestrator.local.processes import ChildProcess
from orchestrator.receiver.publish import task_message
from orchestrator.receiver.signing import sign
from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest
from tests.benchmarks.noop_app import DONE_KEY
from tests.benchmarks.rig import WEBHOOK_SECRET, CpuMeter, Rig, machine, table, wait_until


def redis_calls(rig: Rig) -> dict[str, float]:
    """Redis commands executed since the last ``CONFIG RESETSTAT``, by command."""
    stats = rig.redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): float(v["calls"]) for name, v in stats.items()}


def cpu_meter(rig: Rig, worker: ChildProcess) -> CpuMeter:
    """Every process of the run, grouped: the worker's pool processes apart from its main one."""
    pool = [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
    return CpuMeter({
        "worker pool processes (tasks)": pool,
        "worker main process (Celery consumer)": [worker.pid],
        "redis-server": [int(rig.redis.info("server")["process_id"])],
        "ScaiVault emulator": [rig.child_pid("emulator")],
        "receiver": [rig.child_pid("receiver")],
    })  # fmt: skip


def cpu_table(
    noop: dict[str, float], noop_s: float, rot: dict[str, float], rot_s: float, n: int
) -> str:
    """CPU ms per message by process for both runs, and how busy the machine's cores were."""
    rows = [[label, f"{1000 * noop[label] / n:.2f}", f"{1000 * rot[label] / n:.2f}"]
            for label in rot]  # fmt: skip
    rows.append(["total", f"{1000 * sum(noop.values()) / n:.2f}",
                 f"{1000 * sum(rot.values()) / n:.2f}"])  # fmt: skip
    cores = psutil.cpu_count() or 1
    rows.append(["cores busy (total CPU / (cores x wall time))",
                 f"{100 * sum(noop.values()) / (cores * noop_s):.0f}%",
                 f"{100 * sum(rot.values()) / (cores * rot_s):.0f}%"])  # fmt: skip
    return table(rows, ["process", "no-op task", "rotation"])


def noop_baseline(rig: Rig, n: int) -> tuple[float, float]:
    """(seconds to publish, seconds until all ``n`` no-op tasks ran).

    The ``n`` messages are the exact bytes Celery's ``send_task`` would publish
    (:func:`orchestrator.receiver.publish.task_message`), built before the clock starts and pushed
    in pipelines: a publisher sending one by one through kombu took 10 s of one core for 10,000,
    competing with the workers it was measuring.
    """
    rig.redis.delete(DONE_KEY)
    messages = [
        task_message(
            "bench.noop",
            RotateRequest(
                f"bench/noop/s{i}", event_id=f"evt_noop_{i}", from_version=1, grace_period="48h",
                actor="scaivault", reason="rotation.due event",
            ).to_kwargs(),
        )[1]
        for i in range(n)
    ]  # fmt: skip
    started = time.perf_counter()
    with rig.redis.pipeline(transaction=False) as pipe:
        for chunk in range(0, n, 500):
            pipe.lpush(keys.TASK_QUEUE, *messages[chunk : chunk + 500])
        pipe.execute()
    published = time.perf_counter() - started
    wait_until(lambda: int(rig.redis.get(DONE_KEY) or 0) >= n, 1800, "the no-op tasks", 0.01)
    return published, time.perf_counter() - started


def event(path: str) -> bytes:
    return json.dumps({
        "id": f"evt_bench_{path.replace('/', '_')}", "type": "rotation.due",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "path": path,
        "data": {"version": 1, "policy_id": "rot_bench", "grace_period": "48h",
                 "trigger": "schedule"},
    }).encode()  # fmt: skip


def signed_request(url: str, path: str) -> bytes:
    """The raw HTTP/1.1 request of one signed ``rotation.due`` for ``path``."""
    host = url.split("/")[2]
    body = event(path)
    head = (
        f"POST /scaivault/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\n"
        f"X-ScaiVault-Signature: {sign(body, WEBHOOK_SECRET)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def post_all(url: str, paths: list[str], connections: int = 64) -> list[int]:
    """POST one signed event per path over ``connections`` keep-alive sockets; the statuses.

    Raw HTTP/1.1 on asyncio streams: a client library's per-request cost would otherwise be
    what this measures (httpx manages about 30 requests/s at 64 connections here).
    """
    requests = [signed_request(url, p) for p in paths]
    host, port = url.split("/")[2].split(":")
    statuses: list[int] = []
    todo = iter(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for request in todo:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                statuses.append(int(head[9:12]))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return statuses


def rotations(rig: Rig, url: str, paths: list[str]) -> tuple[float, float]:
    """(seconds until all events were accepted, seconds until all rotations were stored)."""
    before = rig.outcome("stored")
    started = time.perf_counter()
    statuses = asyncio.run(post_all(url, paths))
    ingested = time.perf_counter() - started
    bad = [s for s in statuses if s != 202]
    if bad:
        raise SystemExit(f"the receiver refused {len(bad)} events: {sorted(set(bad))}")

    def stored() -> bool:
        failed = rig.outcome("failed") + rig.outcome("skipped")
        if failed:
            raise SystemExit(f"{failed} rotations failed or were skipped; see {rig.dir}")
        return rig.outcome("stored") - before >= len(paths)

    wait_until(stored, 3600, "all rotations to be stored", 0.02)
    return ingested, time.perf_counter() - started


def profile(rig: Rig, paths: list[str]) -> str:
    """cProfile of the engine rotating ``paths`` in this process; top functions by tottime."""
    from orchestrator.engine.core import Engine
    from orchestrator.log import configure_logging
    from orchestrator.settings import Settings
    from orchestrator.state.messages import RotateRequest

    configure_logging(level="WARNING", fmt="json")  # keep the table readable

    env = rig.env()
    settings = Settings.load(
        redis_url=env["REDIS_URL"], scaivault_url=env["SCAIVAULT_URL"],
        scaivault_token=env["SCAIVAULT_TOKEN"], rotator_config=env["ROTATOR_CONFIG"],
        rotator_seal_key=env["ROTATOR_SEAL_KEY"],
    )  # fmt: skip
    engine = Engine.from_settings(settings)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for path in paths:
        engine.rotate(RotateRequest(path=path, from_version=1, grace_period="48h"), owner="prof")
    profiler.disable()
    seconds = time.perf_counter() - started
    engine.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(14)
    stats.sort_stats("cumulative").print_stats("orchestrator|rotators", 16)
    head = f"in-process engine: {len(paths)} rotations in {seconds:.2f}s = "
    head += (
        f"{len(paths) / seconds:.1f}/s on one process ({1000 * seconds / len(paths):.1f} ms each)"
    )
    return head + "\n" + out.getvalue()


def add(total: dict[str, float], more: dict[str, float]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0.0) + value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument(
        "--rounds", type=int, default=1, help="no-op and rotation runs alternated (median ratio)"
    )
    parser.add_argument("--profile", type=int, default=300, help="rotations to profile (0: off)")
    args = parser.parse_args()

    rig = Rig()
    with rig:  # closed at the end; its logs kept if the run fails
        rig.emulator()
        rounds = [[f"bench/e2e/r{r}/s{i:06d}" for i in range(args.secrets)]
                  for r in range(args.rounds)]  # fmt: skip
        extra = [f"bench/prof/s{i:06d}" for i in range(args.profile)]
        seeded = rig.seed([p for paths in rounds for p in paths] + extra)
        print(
            f"seeded {args.secrets * args.rounds + len(extra)} secrets in {seeded:.1f}s", flush=True
        )
        worker = rig.worker(concurrency=args.workers)
        url = rig.receiver()
        meter = cpu_meter(rig, worker)

        rows, ratios = [], []
        cpu_noop: dict[str, float] = {}
        cpu_rot: dict[str, float] = {}
        noop_calls: dict[str, float] = {}
        rot_calls: dict[str, float] = {}
        noop_wall = rot_wall = 0.0
        for number, paths in enumerate(rounds, 1):
            rig.redis.config_resetstat()
            cpu_start = meter.read()
            published, noop_total = noop_baseline(rig, args.secrets)
            cpu_mid = meter.read()
            add(noop_calls, redis_calls(rig))
            rig.redis.config_resetstat()
            print(f"round {number} no-op: published in {published:.1f}s, all ran in "
                  f"{noop_total:.1f}s", flush=True)  # fmt: skip
            ingested, rot_total = rotations(rig, url, paths)
            cpu_end = meter.read()
            add(rot_calls, redis_calls(rig))
            print(f"round {number} rotations: accepted in {ingested:.1f}s, stored in "
                  f"{rot_total:.1f}s", flush=True)  # fmt: skip
            add(cpu_noop, CpuMeter.delta(cpu_start, cpu_mid))
            add(cpu_rot, CpuMeter.delta(cpu_mid, cpu_end))
            noop_wall += noop_total
            rot_wall += rot_total
            noop_rate, rot_rate = args.secrets / noop_total, args.secrets / rot_total
            ratios.append(rot_rate / noop_rate)
            rows += [
                [number, "no-op Celery task (baseline)", f"{published:.1f}", f"{noop_total:.1f}",
                 f"{noop_rate:.0f}", "1.00"],
                [number, "rotation.due -> stored", f"{ingested:.1f}", f"{rot_total:.1f}",
                 f"{rot_rate:.0f}", f"{ratios[-1]:.2f}"],
            ]  # fmt: skip
        worker.stop()

        ratio = statistics.median(ratios)
        messages = args.secrets * args.rounds
        print()
        print(f"machine: {machine()}; {args.workers} worker processes; {args.secrets} messages "
              f"per run, {args.rounds} round(s)")  # fmt: skip
        print(table(rows, ["round", "run", "offered in s", "all done in s", "per second",
                           "vs no-op"]))  # fmt: skip
        print(f"median of the rounds' ratios: {ratio:.2f}; goal: at least 0.33 of the no-op "
              f"rate -> {'met' if ratio >= 1 / 3 else 'NOT met'}")  # fmt: skip

        print()
        print("where the CPU went (user + system ms per message, by process, all rounds):")
        print(cpu_table(cpu_noop, noop_wall, cpu_rot, rot_wall, messages))
        steps = rig.step_sums()
        rows = [[s, n, f"{1000 * t / max(n, 1):.2f}"]
                for s, (n, t) in sorted(steps.items(), key=lambda kv: -kv[1][1])]  # fmt: skip
        print()
        print("the rotation steps' own wall time in the workers (ms each):")
        print(table(rows, ["step", "count", "ms each"]))
        print()
        print(
            "Redis commands per message (INFO commandstats; each one a round trip unless "
            "pipelined or inside a script):"
        )
        names = sorted(set(noop_calls) | set(rot_calls), key=lambda c: -rot_calls.get(c, 0))
        rows = [
            [c, f"{noop_calls.get(c, 0) / messages:.1f}", f"{rot_calls.get(c, 0) / messages:.1f}"]
            for c in names[:12]
        ]
        rows.append(
            [
                "total",
                f"{sum(noop_calls.values()) / messages:.1f}",
                f"{sum(rot_calls.values()) / messages:.1f}",
            ]
        )
        print(table(rows, ["command", "no-op task", "rotation"]))  # fmt: skip
        if extra:
            print()
            print(profile(rig, extra))


if __name__ == "__main__":
    main()
