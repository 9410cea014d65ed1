"""Benchmark: signed webhook events per second through the receiver, against two baselines.

Run from the repository root (starts its own redis-server and three uvicorn servers, one worker
each, one after the other, on free loopback ports)::

    python tests/benchmarks/bench_receiver.py [--seconds 5] [--connections 64]

Baselines measured in the same run on the same machine:

(a) minimal correct receiver: a bare Starlette endpoint that verifies the HMAC, parses the JSON
    and does one ``SET NX`` in Redis (the floor every deduplicating receiver pays);
(b) naive receiver in the spec's style: a FastAPI handler that verifies, then calls Celery's
    ``send_task`` inline.

Every request carries a unique event id and a valid signature. The load generator is a separate
process speaking raw HTTP/1.1 keep-alive over ``connections`` sockets (uvloop), so the client
costs as little CPU as possible. Prints a table with events/s, p50/p99 latency and both ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi
import psutil
import redis
import redis.asyncio
from celery import Celery
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.local.processes import ChildProcess, RedisServer, cli_argv, free_port

SECRET = "whsec_bench_secret_0123456789"
EVENT_PATH = "/scaivault/events"


# --- baseline servers (run in their own process: ``--serve minimal|naive``) ---------------


def minimal_app(redis_url: str) -> Any:
    """(a): verify the HMAC, parse the JSON, one SET NX. Nothing else."""
    client = redis.asyncio.Redis.from_url(redis_url)
    key = SECRET.encode()

    async def events(request: Request) -> Response:
        body = await request.body()
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        sig = request.headers.get("x-scaivault-signature", "")
        if not hmac.compare_digest(sig.encode(), expected.encode()):
            return Response(b'{"error":"unauthorized"}', 401)
        event = json.loads(body)
        fresh = await client.set(f"svr:event:{event['id']}", "1", nx=True, ex=604800)
        return Response(b'{"status":"queued"}' if fresh else b'{"status":"duplicate"}', 202)

    return Starlette(routes=[Route(EVENT_PATH, events, methods=["POST"])])


def naive_app(redis_url: str) -> Any:
    """(b): the spec's FastAPI handler, then ``send_task`` inline."""
    celery_app = Celery("bench", broker=redis_url)
    celery_app.conf.task_default_queue = "scaivault"
    app = fastapi.FastAPI()
    key = SECRET.encode()

    @app.post(EVENT_PATH, status_code=202)
    async def events(request: fastapi.Request) -> dict[str, str]:
        body = await request.body()
        sig = request.headers.get("X-ScaiVault-Signature", "")
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, expected):
            raise fastapi.HTTPException(401, "bad signature")
        event = await request.json()
        kwargs = {
            "path": event["path"],
            "trigger": "schedule",
            "event_id": event["id"],
            "from_version": event["data"]["version"],
            "grace_period": event["data"].get("grace_period"),
            "actor": "scaivault",
            "reason": "rotation.due event",
        }
        celery_app.send_task("scaivault.rotate", kwargs=kwargs, queue="scaivault")
        return {"status": "queued"}

    return app


def run_baseline(kind: str, port: int, redis_url: str) -> None:
    import uvicorn

    app = minimal_app(redis_url) if kind == "minimal" else naive_app(redis_url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- load generator (run in its own process: ``--load``) ----------------------------------


def signed_requests(count: int, prefix: str, port: int) -> list[bytes]:
    """``count`` raw HTTP requests, each a rotation.due with a unique id, correctly signed."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    out = []
    for n in range(count):
        body = json.dumps(
            {
                "id": f"evt_{prefix}_{n}",
                "type": "rotation.due",
                "created_at": now,
                "path": f"bench/secret-{n % 100}",
                "data": {"version": 3, "policy_id": "rot_x", "grace_period": "48h"},
            }
        ).encode()
        sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        head = (
            f"POST {EVENT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-ScaiVault-Signature: {sig}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


async def _connection(
    port: int, requests: list[bytes], state: dict[str, Any], results: list[tuple[float, int]]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while state["next"] < len(requests) and time.perf_counter() < state["stop"]:
            request = requests[state["next"]]
            state["next"] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            ended = time.perf_counter()
            if ended >= state["measure_from"]:
                results.append((ended - started, status))
    finally:
        writer.close()


async def _load(port: int, connections: int, seconds: float, warmup: float, prefix: str) -> dict:
    requests = signed_requests(int(12_000 * (seconds + warmup)), prefix, port)
    start = time.perf_counter()
    state = {"next": 0, "measure_from": start + warmup, "stop": start + warmup + seconds}
    results: list[tuple[float, int]] = []
    await asyncio.gather(*(_connection(port, requests, state, results) for _ in range(connections)))
    elapsed = min(time.perf_counter(), state["stop"]) - state["measure_from"]
    latencies = sorted(latency for latency, _ in results)
    ok = sum(1 for _, status in results if status == 202)
    return {
        "rate": ok / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": len(results) - ok,
        "sent": state["next"],
    }


def run_load(port: int, connections: int, seconds: float, warmup: float, prefix: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(port, connections, seconds, warmup, prefix))))


# --- orchestration ------------------------------------------------------------------------

TARGETS = {
    "minimal": "(a) minimal: Starlette + HMAC + SET NX",
    "naive": "(b) naive: FastAPI + send_task inline",
    "receiver": "scaivault-rotator serve",
}


def start_servers(redis_url: str, workdir: Path) -> dict[str, tuple[ChildProcess, int]]:
    """All three servers at once (idle ones cost nothing), so rounds can alternate."""
    env = {**os.environ, "REDIS_URL": redis_url, "SCAIVAULT_WEBHOOK_SECRET": SECRET}
    me = [sys.executable, __file__, "--redis-url", redis_url, "--serve"]
    argvs = {"minimal": [*me, "minimal"], "naive": [*me, "naive"], "receiver": cli_argv("serve")}
    servers = {}
    for name, argv in argvs.items():
        port = free_port()
        child = ChildProcess(name, [*argv, "--port", str(port)], workdir / f"{name}.log", env=env)
        servers[name] = (child.start(), port)
    for child, port in servers.values():
        child.wait_port(port)
    return servers


def measure(name: str, child: ChildProcess, port: int, opts: argparse.Namespace, rnd: int) -> dict:
    """One load run against one server, plus the server's CPU time per answered request."""
    load = [sys.executable, __file__, "--load", "--port", str(port), "--prefix", f"{name}{rnd}"]
    load += ["--seconds", str(opts.seconds), "--warmup", str(opts.warmup)]
    load += ["--connections", str(opts.connections)]
    proc = psutil.Process(child.pid)
    cpu_before = sum(proc.cpu_times()[:2])
    out = subprocess.run(load, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["cpu_us"] = (sum(proc.cpu_times()[:2]) - cpu_before) / result["sent"] * 1e6
    return result


def compare(opts: argparse.Namespace) -> None:
    workdir = Path(opts.workdir)
    redis_server = RedisServer(workdir / "redis", appendonly=False).start()
    runs: dict[str, list[dict]] = {name: [] for name in TARGETS}
    try:
        servers = start_servers(redis_server.url, workdir)
        try:
            for rnd in range(opts.rounds):
                for name, (child, port) in servers.items():
                    runs[name].append(measure(name, child, port, opts, rnd))
        finally:
            for child, _ in servers.values():
                child.stop()
        queued = redis.Redis.from_url(redis_server.url).llen("scaivault")
    finally:
        redis_server.stop()
    print_table({name: _median(results) for name, results in runs.items()}, opts, queued)


def _median(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def print_table(rows: dict[str, dict], opts: argparse.Namespace, queued: int) -> None:
    print(
        f"signed rotation.due events, unique ids, {opts.connections} connections, one uvicorn "
        f"worker each; median of {opts.rounds} alternating {opts.seconds:.0f} s rounds"
    )
    print(f"{'receiver':<40} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/event':>13}")
    for name, r in rows.items():
        print(
            f"{TARGETS[name]:<40} {r['rate']:>9.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} "
            f"{r['cpu_us']:>13.0f}"
        )
    a, b, ours = (r["rate"] for r in rows.values())
    print(f"scaivault-rotator / naive (b)   = {ours / b:.2f}x   (target >= 2x)")
    print(f"scaivault-rotator / minimal (a) = {ours / a:.0%}    (target >= 60%)")
    errors = sum(r["errors"] for r in rows.values())
    print(f"non-202 answers: {errors:.0f}; messages on the Celery queue after the run: {queued}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve", choices=["minimal", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="x", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        run_baseline(opts.serve, opts.port, opts.redis_url)
    elif opts.load:
        run_load(opts.port, opts.connections, opts.seconds, opts.warmup, opts.prefix)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            opts.workdir = workdir
            compare(opts)


if __name__ == "__main__":
    main()
