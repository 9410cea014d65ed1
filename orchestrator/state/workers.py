"""The registry of live worker and beat processes in Redis: who runs where, which routing table
each runs, and when each last showed that its work loop turns.

One hash per process (``keys.process``) holds its identity, its routing file (path, SHA-256,
when it was loaded) and its last heartbeat on Redis's clock; the hash expires ``ttl`` seconds
after the last heartbeat, so a dead process vanishes by itself. A sorted set
(``keys.PROCESSES``) indexes them by heartbeat so readers need no key scan. Heartbeats come
from the process's work loop (a worker's consumer event loop, beat's tick:
:mod:`orchestrator.worker.heartbeat`), never from a side thread, so a wedged loop stops beating.

Readers: the ``workers`` and ``heartbeat_age_seconds`` metrics, and operators' tools that list
each live process's routing table.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis

from orchestrator.state import keys

Role = Literal["worker", "beat"]
ROLES: tuple[Role, ...] = ("worker", "beat")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Routing:
    """The routing file a process runs: its path, the SHA-256 of its bytes, when it was read."""

    path: str
    sha256: str
    loaded_at: str

    @classmethod
    def of(cls, path: Path, content: bytes) -> Routing:
        """The routing file at ``path`` whose bytes (as loaded) are ``content``."""
        return cls(str(path), hashlib.sha256(content).hexdigest(), _now_iso())

    @classmethod
    def read(cls, path: Path) -> Routing:
        """:meth:`of` the file's current bytes."""
        return cls.of(path, path.read_bytes())


@dataclass(frozen=True)
class Process:
    """One process's identity: ``node`` is Celery's node name (``w1@host``) where it has one."""

    role: Role
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    node: str = ""
    started_at: str = field(default_factory=_now_iso)

    @property
    def id(self) -> str:
        """The registry's name for the process."""
        return f"{self.role}:{self.hostname}:{self.pid}"


@dataclass(frozen=True)
class LiveProcess:
    """A registered process as a reader sees it; ``age_seconds`` since its last heartbeat."""

    process: Process
    routing: Routing | None
    heartbeat_ms: int
    age_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.process),
            "routing": asdict(self.routing) if self.routing else None,
            "heartbeat_at": datetime.fromtimestamp(self.heartbeat_ms / 1000, UTC).isoformat(),
            "age_seconds": round(self.age_seconds, 3),
        }


class WorkerRegistry:
    """Heartbeats of live processes; entries vanish ``ttl`` seconds after their last one."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)

    def beat(self, process: Process, routing: Routing | None = None) -> int:
        """Record that ``process`` is alive (running ``routing``); return Redis's time in ms."""
        now_ms = self._now_ms()
        fields = [*asdict(process).items(), ("heartbeat_ms", now_ms)]
        if routing is not None:
            fields += [(f"routing_{k}", v) for k, v in asdict(routing).items()]
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.process(process.id), items=[item for pair in fields for item in pair])
        pipe.pexpire(keys.process(process.id), self.ttl_ms)
        pipe.zadd(keys.PROCESSES, {process.id: now_ms})
        pipe.zremrangebyscore(keys.PROCESSES, "-inf", now_ms - self.ttl_ms)
        pipe.execute()
        return now_ms

    def forget(self, process: Process) -> None:
        """Take ``process`` out (a clean shutdown: it is not alive, however recent its beat)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.process(process.id))
        pipe.zrem(keys.PROCESSES, process.id)
        pipe.execute()

    def live(self, role: Role | None = None) -> list[LiveProcess]:
        """Processes whose last heartbeat is within the TTL, newest first."""
        now_ms = self._now_ms()
        ids = self.client.zrevrangebyscore(keys.PROCESSES, "+inf", now_ms - self.ttl_ms)
        pipe = self.client.pipeline(transaction=False)
        for process_id in ids:
            pipe.hgetall(keys.process(_text(process_id)))
        found = [_entry(raw, now_ms) for raw in pipe.execute() if raw]
        return [entry for entry in found if role is None or entry.process.role == role]

    def _now_ms(self) -> int:
        secs, micros = self.client.time()
        return int(secs) * 1000 + int(micros) // 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(raw: dict[Any, Any], now_ms: int) -> LiveProcess:
    data = {_text(k): _text(v) for k, v in raw.items()}
    role: Role = "beat" if data.get("role") == "beat" else "worker"
    process = Process(
        role=role,
        hostname=data.get("hostname", ""),
        pid=int(data.get("pid", 0)),
        node=data.get("node", ""),
        started_at=data.get("started_at", ""),
    )
    routing = None
    if "routing_sha256" in data:
        routing = Routing(data["routing_path"], data["routing_sha256"], data["routing_loaded_at"])
    heartbeat_ms = int(data.get("heartbeat_ms", 0))
    return LiveProcess(process, routing, heartbeat_ms, max(0.0, (now_ms - heartbeat_ms) / 1000))
