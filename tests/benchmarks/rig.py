"""The benchmark rig: a private Redis, the ScaiVault emulator, workers and a receiver, as real
child processes on loopback, plus the small measuring helpers the ``bench_*`` scripts share.

Workers run ``celery -A tests.benchmarks.noop_app worker``: the product's Celery app and tasks
plus one ``bench.noop`` task, so the no-op baseline runs on the very same worker processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import redis
from celery import Celery
from cryptography.fernet import Fernet

from orchestrator.local.processes import ChildProcess, RedisServer, Stack, cli_argv, free_port
from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest, Task

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec_bench_" + secrets.token_hex(8)
ROUTING = """[[rules]]
match = "bench/**"
rotator = "random-password"
grace_period = "{grace}"
[rules.options]
length = 24
"""


def machine() -> str:
    """One line naming the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    mem = psutil.virtual_memory().total / 2**30
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, load average {load:.1f}"
    )


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table (markdown-compatible)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def wait_until(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """Poll ``check`` until it is truthy; raise with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark aborted: timed out waiting for {what}")
        time.sleep(poll)


class CpuMeter:
    """CPU seconds (user + system) used by groups of processes between two readings."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def read(self) -> dict[str, float]:
        """CPU seconds each group has used so far (a process that ended counts 0)."""
        out: dict[str, float] = {}
        for label, pids in self.groups.items():
            out[label] = 0.0
            for pid in pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    out[label] += float(sum(psutil.Process(pid).cpu_times()[:2]))
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {label: after[label] - before[label] for label in after}


def rss_mb(child: ChildProcess) -> float:
    """Resident memory (MiB) of a child and every process it forked."""
    try:
        proc = psutil.Process(child.pid)
        procs = [proc, *proc.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in procs)) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


class Rig:
    """Everything a benchmark starts; :meth:`close` stops it all."""

    def __init__(self, grace: str = "48h", **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="svr-bench-"))
        self.stack = Stack()
        self.redis_server = RedisServer(self.dir / "redis")
        self.stack.add(self.redis_server)
        self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.admin_token = "adm_" + secrets.token_urlsafe(16)
        self.vault_url = ""
        self.routing = self.dir / "rotation.toml"
        self.routing.write_text(ROUTING.format(grace=grace))
        self.seal_key = Fernet.generate_key().decode()  # one for every process of the rig
        self.extra_env = env
        self.workers: list[ChildProcess] = []

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.close(keep_logs=kind is not None)

    def close(self, keep_logs: bool = False) -> None:
        """Stop every process; remove the temp dir unless its logs are wanted (after a failure)."""
        self.stack.close()
        if keep_logs:
            print(f"logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- processes ---

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCAIVAULT_", "ROTATOR_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            REDIS_URL=self.redis_server.url,
            SCAIVAULT_URL=self.vault_url,
            SCAIVAULT_TOKEN=self.admin_token,
            SCAIVAULT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            ROTATOR_CONFIG=str(self.routing),
            ROTATOR_SEAL_KEY=self.seal_key,
            ROTATOR_LOG_LEVEL="INFO",  # the default: its cost is part of the figures
            ROTATOR_METRICS_PORT="0",
            ROTATOR_MIN_GRACE="0s",  # bench_grace's events ask for seconds
        )
        env.update(self.extra_env)
        return env

    def child_pid(self, name: str) -> int:
        """The pid of the child process started as ``name``."""
        return next(
            c.pid for c in self.stack.children if isinstance(c, ChildProcess) and c.name == name
        )

    def child(self, name: str, argv: list[str]) -> ChildProcess:
        child = ChildProcess(name, argv, self.dir / f"{name}.log", env=self.env(), cwd=ROOT)
        self.stack.add(child)
        return child.start()

    def emulator(self) -> None:
        port = free_port()
        self.vault_url = f"http://127.0.0.1:{port}"
        argv = cli_argv("emulator", "--port", str(port), "--admin-token", self.admin_token)
        self.child("emulator", argv).wait_http(f"{self.vault_url}/healthz")

    def worker(
        self, name: str = "w1", concurrency: int = 2, loglevel: str = "INFO"
    ) -> ChildProcess:
        argv = [sys.executable, "-m", "celery", "-A", "tests.benchmarks.noop_app", "worker",
                "-Q", keys.TASK_QUEUE, "-P", "prefork", "-c", str(concurrency), "-n", f"{name}@%h",
                "--without-mingle", "--without-gossip", "-l", loglevel]  # fmt: skip
        child = self.child(name, argv)
        child.wait_log("ready", timeout=60)
        self.workers.append(child)
        return child

    def receiver(self) -> str:
        port = free_port()
        self.child("receiver", cli_argv("serve", "--port", str(port))).wait_http(
            f"http://127.0.0.1:{port}/healthz"
        )
        return f"http://127.0.0.1:{port}/scaivault/events"

    def beat(self) -> ChildProcess:
        return self.child("beat", cli_argv("beat"))

    # --- data ---

    def seed(self, paths: Sequence[str], threads: int = 16) -> float:
        """PUT one ``{username, password}`` secret per path as admin; returns seconds taken."""
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        limits = httpx.Limits(max_connections=threads)
        with httpx.Client(base_url=self.vault_url, headers=headers, limits=limits) as client:

            def put(path: str) -> None:
                body = {"data": {"username": path.rsplit("/", 1)[-1],
                                 "password": secrets.token_urlsafe(18)},
                        "metadata": {"description": "benchmark"}}  # fmt: skip
                client.put(f"/v1/secrets/{path}", json=body).raise_for_status()

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(put, paths))
        return time.perf_counter() - started

    def rotate_all(self, paths: Sequence[str], rotator: str, reason: str) -> float:
        """Enqueue one manual ``scaivault.rotate`` per path at once with Celery's producer (no
        ledger, no CLI); seconds until ``rotator`` stored all of them."""
        before = self.outcome("stored", rotator)
        producer = Celery("bench-producer", broker=self.redis_server.url, set_as_current=False)
        producer.conf.update(task_serializer="json", accept_content=["json"])
        started = time.perf_counter()
        with producer.connection_for_write() as conn:
            for path in paths:
                request = RotateRequest(
                    path, trigger="manual", from_version=1, actor="bench", reason=reason
                )
                producer.send_task(
                    Task.ROTATE, kwargs=request.to_kwargs(), queue=keys.TASK_QUEUE, connection=conn
                )

        def stored() -> bool:
            return self.outcome("stored", rotator) - before >= len(paths)

        wait_until(stored, 7200, f"{len(paths)} rotations stored", 0.05)
        return time.perf_counter() - started

    def outcome(self, outcome: str, rotator: str = "random-password") -> int:
        """How many rotations ended a step with ``outcome`` (the worker metrics' counter)."""
        raw = self.redis.hget(keys.METRIC_OUTCOMES, json.dumps([rotator, outcome]))
        return int(raw or 0)

    def step_sums(self) -> dict[str, tuple[int, float]]:
        """Per step of the real run: (count, total seconds), from the worker metrics."""
        counts: dict[str, int] = {}
        sums: dict[str, float] = {}
        for key, value in self.redis.hgetall(keys.METRIC_STEPS).items():
            parts = json.loads(key)
            if parts[2] == "sum":
                sums[parts[1]] = float(value)
            else:  # one field per bucket, each counting its own observations
                counts[parts[1]] = counts.get(parts[1], 0) + int(value)
        return {step: (counts.get(step, 0), sums[step]) for step in sums}
