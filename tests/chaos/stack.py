"""The chaos scenario's stack: the sandbox with its own Redis, fast engine timings, two workers,
a private PostgreSQL for the ``postgres-dual`` secrets and an ACL Redis for the ``redis-acl`` ones.

:class:`ChaosStack` reuses :class:`~orchestrator.local.sandbox.Sandbox` (emulator, fake Salesforce
over TLS, receiver, beat, the first worker) and adds what the scenario needs on top: a private
``redis-server`` with AOF that the harness restarts, a worker token that outlives months of
emulator clock, a routing file whose backoffs fit a test, a pool of worker processes that can
be SIGKILLed (whole process group) and replaced, and the targets of the database-style secrets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from orchestrator.local.postgres_server import PostgresServer
from orchestrator.local.postgres_target import PostgresTarget
from orchestrator.local.processes import ChildProcess, RedisServer, cli_argv, free_port
from orchestrator.local.provisioning import WORKER_IDENTITY
from orchestrator.local.sandbox import Sandbox
from orchestrator.state import keys
from orchestrator.state.records import LEASED
from orchestrator.state.runs import RunStore
from tests.chaos.consumers import LoginTarget
from tests.chaos.redis_acl import AclTarget

#: Engine settings for the scenario: short leases, sweeps and backoffs so that crash recovery
#: takes seconds; the visibility timeout is the smallest the settings accept.
ENGINE_ENV = {
    "ROTATOR_LOG_LEVEL": "INFO",
    "ROTATOR_LEASE_SECONDS": "3",
    "ROTATOR_MIN_GRACE": "0s",  # the scenario's events ask for seconds
    "ROTATOR_SWEEP_INTERVAL": "0.5",
    "ROTATOR_RECONCILE_INTERVAL": "3600",
    "ROTATOR_FINALIZE_LEASE": "10",
    "ROTATOR_RETRY_BACKOFF_MAX": "2",
    "ROTATOR_MAX_ATTEMPTS": "15",
    "SCAIVAULT_RETRY_DEADLINE": "3",
    # Short, so the scenario's late answers (tests.chaos.faults.LATE_ANSWER) come after it.
    "SCAIVAULT_READ_TIMEOUT": "1",
    "ROTATOR_TASK_TIME_LIMIT": "30",
    "ROTATOR_VISIBILITY_TIMEOUT": "60",
}


class ChaosSandbox(Sandbox):
    """The sandbox with a long-lived worker token and the scenario's routing file: besides the
    sandbox's rules, one ``redis-acl`` rule per app of the ACL target (``PREFIX/acl/APP``)."""

    acl: AclTarget | None = None

    @property
    def acl_admin_path(self) -> str:
        return f"{self.ends.prefix}/admin/redis-acl"

    def _configure_vault(self) -> None:
        super()._configure_vault()
        # The scenario fires schedules by moving the emulator clock by months; the sandbox's
        # 24h token would expire on that clock. Same identity and policy, longer life.
        body = {"identity": WORKER_IDENTITY, "ttl": "3650d"}
        self.ends.worker_token = str(self.admin("POST", "/v1/_emulator/tokens", body)["token"])
        if self.acl is not None:
            self.originals[self.acl_admin_path] = dict(self.acl.admin)
            self.put(self.acl_admin_path, self.acl.admin, "Redis ACL admin")

    def routing_rules(self) -> list[dict[str, Any]]:
        return [
            self.password_rule("db", length=24, field="password"),
            self.salesforce_rule(read_timeout=10.0, limit_backoff=1.0),
            *self.postgres_rules(),
            *self.acl_rules(),
        ]

    def acl_rules(self) -> list[dict[str, Any]]:
        if self.acl is None:
            return []
        return [
            self.acl.rule(app, f"{self.ends.prefix}/acl/{app}", self.grace, self.acl_admin_path)
            for app in self.acl.apps
        ]

    def add_acl(self, app: str) -> str:
        """``app``'s secret at ``PREFIX/acl/APP``: its first ACL user and password."""
        assert self.acl is not None
        path = f"{self.ends.prefix}/acl/{app}"
        self.originals[path] = self.acl.secret(app)
        self.put(path, self.originals[path], f"{app} Redis ACL login (redis-acl, two users)")
        return path


class ChaosStack:
    """Redis, the sandbox and a pool of worker processes; everything stops on :meth:`close`."""

    def __init__(
        self,
        workdir: Path,
        grace: str,
        postgres_apps: list[str] | None = None,
        acl_apps: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir / "redis")
        #: The private PostgreSQL with a ``postgres-dual`` rule per app (none without apps).
        self.postgres: PostgresTarget | None = None
        if postgres_apps:
            server = PostgresServer(log_path=workdir / "postgres.log")
            self.postgres = PostgresTarget(server, postgres_apps, recheck="1s")
        self.box = ChaosSandbox(
            workdir / "stack",
            prefix="chaos",
            grace=grace,
            engine_env=ENGINE_ENV,
            postgres=self.postgres,
        )
        #: The ACL Redis with two ``redis-acl`` users per app (none without apps).
        self.acl = AclTarget(workdir / "acl-redis", acl_apps) if acl_apps else None
        self.box.acl = self.acl
        self.workers: list[ChildProcess] = []
        self.retired: list[ChildProcess] = []
        self.metrics_ports: dict[str, int] = {}
        self._started = 0
        self._ready_names: set[str] = set()
        self._client: redis.Redis | None = None
        self._store: RunStore | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, workers: int = 2) -> ChaosStack:
        """Start PostgreSQL, the ACL Redis, Redis, the sandbox (receiver, beat, first worker)
        and more workers."""
        if self.postgres is not None:
            self.box.stack.add(self.postgres.server)  # stopped with the sandbox
            self.postgres.server.start()
        if self.acl is not None:
            self.acl.start()
            self.box.stack.add(self.acl.server)  # stopped with the sandbox
        self.redis.start()
        self.box.ends.redis_url = self.redis.url
        self.box.start()
        first = self.box.children["worker"]
        self.workers.append(first)
        self.metrics_ports[first.name] = self.box.ends.metrics_port
        while len(self.workers) < workers:
            self.start_worker()
        for child in self.workers:
            child.wait_log("ready.", timeout=60)
        return self

    def close(self) -> None:
        """Stop every process (the sandbox's and the workers added here), then Redis."""
        if self._client is not None:
            self._client.close()
        self.box.close()
        self.redis.stop()

    # --- handles -----------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """A Redis client (strings) on the stack's Redis."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        return self._client

    @property
    def store(self) -> RunStore:
        """The run store on the stack's Redis (the engine's own reads)."""
        if self._store is None:
            self._store = RunStore(self.client)
        return self._store

    def target_of(self, path: str) -> LoginTarget:
        """The server a PostgreSQL (``PREFIX/postgres/...``) or ACL secret logs in to."""
        target = self.acl if "/acl/" in path else self.postgres
        if target is None:
            raise LookupError(f"{path}: this stack has no target for it")
        return target

    def salesforce_client(self) -> httpx.Client:
        """A new HTTPS client for the fake Salesforce (one per thread)."""
        context = ssl.create_default_context(cafile=self.box.ends.salesforce_ca)
        return httpx.Client(
            base_url=self.box.ends.salesforce_url, verify=context, timeout=10.0, trust_env=False
        )

    def cli_env(self) -> dict[str, str]:
        """The on-call CLI's environment (admin token) for this stack."""
        return self.box.role_env(token=self.box.ends.admin_token)

    # --- workers -----------------------------------------------------------------------------

    def start_worker(self) -> ChildProcess:
        """Start one more worker process (prefork, 2 pool processes); do not wait for it."""
        self._started += 1
        name = f"worker-{self._started + 1}"
        port = free_port()
        env = self.box.role_env()
        env["ROTATOR_METRICS_PORT"] = str(port)
        argv = cli_argv("worker", "--concurrency", "2", "-P", "prefork")
        child = ChildProcess(name, argv, self.box.ends.workdir / f"{name}.log", env=env)
        self.box.stack.add(child)
        self.workers.append(child.start())
        self.metrics_ports[name] = port
        return child

    def _ready(self, worker: ChildProcess) -> bool:
        if worker.name not in self._ready_names and "ready." in worker.log_tail(100_000):
            self._ready_names.add(worker.name)
        return worker.name in self._ready_names

    def _target(self, index: int) -> ChildProcess | None:
        """The ``index``-th live worker, among those that finished starting if any did."""
        live = [w for w in self.workers if w.alive]
        ready = [w for w in live if self._ready(w)]
        pool = ready or live
        return pool[index % len(pool)] if pool else None

    def kill_worker(self, index: int) -> ChildProcess | None:
        """SIGKILL a worker's whole process group (a host or container dying); return it."""
        victim = self._target(index)
        if victim is not None:
            victim.kill()
            self._retire(victim)
        return victim

    def kill_pool_process(self, index: int) -> int | None:
        """SIGKILL one pool process of a worker (its main process forks a new one); its pid."""
        target = self._target(index)
        try:
            children = psutil.Process(target.pid).children() if target else []
            alive = [c for c in children if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:
            return None
        if not alive:
            return None
        child = alive[index % len(alive)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        return int(child.pid)

    def in_flight(self) -> tuple[dict[str, str], int]:
        """Rotations a worker drives now (id -> state: a live lease, a state a worker is in),
        and how many task messages workers took and have not acknowledged."""
        client = self.client
        seconds, micros = client.time()
        now = seconds * 1000 + micros // 1000
        ids = client.zrangebyscore(keys.LEASES, now, "+inf")
        with client.pipeline(transaction=False) as pipe:
            for rotation_id in ids:
                pipe.hget(keys.run(rotation_id), "state")
            pipe.hlen(keys.BROKER_UNACKED)
            *states, messages = pipe.execute()
        runs = {i: s for i, s in zip(ids, states, strict=True) if s in LEASED}
        return runs, int(messages)

    def supervise(self) -> list[ChildProcess]:
        """Replace workers that exited by themselves, whatever their status, as ``deploy/``
        does (systemd ``Restart=always``, Compose ``unless-stopped``, Kubernetes ``Always``)."""
        exited = [w for w in self.workers if not w.alive]
        for worker in exited:
            self._retire(worker)
            self.start_worker()
        return exited

    def _retire(self, worker: ChildProcess) -> None:
        self.workers.remove(worker)
        self.retired.append(worker)

    def live_metrics_urls(self) -> list[str]:
        """``/metrics`` of every live worker and of the receiver."""
        urls = [f"http://127.0.0.1:{self.metrics_ports[w.name]}/metrics" for w in self.workers]
        urls.append(self.box.ends.receiver_url.rsplit("/scaivault/", 1)[0] + "/metrics")
        return urls

    def our_logs(self) -> list[Path]:
        """Log files of our own processes (receiver, workers, beat) and the emulator."""
        names = {"receiver", "beat", "emulator", *(w.name for w in self.workers + self.retired)}
        return [self.box.ends.workdir / f"{name}.log" for name in sorted(names)]

    def scrape(self, url: str) -> str:
        """One metrics scrape ('' if the endpoint does not answer)."""
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=5.0, trust_env=False).text
        return ""

    def emulator(self, method: str, path: str, body: Any = None) -> Any:
        """An admin call to the emulator (control endpoints are never faulted)."""
        return self.box.admin(method, path, body)
