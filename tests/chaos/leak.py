"""The secret scan: no secret value in any log, Redis key, broker message or metric.

Sentinels are every password and client secret any version ever held, plus the stack's own
secrets (tokens, webhook secret, seal key, the Salesforce admin secret). Places searched:

- the logs of the receiver, every worker (also the killed ones), beat and the emulator;
- every Redis key as it is at the end, and the AOF files: every write of the whole run,
  which includes every broker message pushed (and its unacked copy);
- the broker messages sampled from the queue while the scenario ran;
- one ``/metrics`` scrape of every live worker and of the receiver;
- the output of every on-call CLI run;
- the PostgreSQL server's log (``log_statement = 'all'``), when the scenario has one.

Each place must also hold known non-secret text (a path, a task name), so an empty or unread
source cannot pass the check by accident.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import redis

from orchestrator.state import keys
from tests.chaos.checks import Check, Facts, World
from tests.chaos.stack import ChaosStack


class BrokerSampler:
    """A thread copying the messages waiting in the Celery queue (and unacked) every 0.1 s."""

    def __init__(self, stack: ChaosStack, into: set[str]) -> None:
        self.stack = stack
        self.into = into
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-sampler", daemon=True)

    def start(self) -> BrokerSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.stack.redis.url, decode_responses=True)
        try:
            while not self._stop.wait(0.1):
                try:
                    self.into.update(client.lrange(keys.TASK_QUEUE, 0, -1))
                    self.into.update(client.hvals("unacked"))
                except redis.RedisError:
                    continue
        finally:
            client.close()


def redis_dump(client: redis.Redis) -> str:
    """Every key and value in Redis as text (what a reader of the database would see)."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        parts.append(str(key))
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "list":
            parts.append(str(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(str(client.smembers(key)))
        elif kind == "zset":
            parts.append(str(client.zrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(str(client.xrange(key)))
    return "\n".join(parts)


#: A kombu message body in a Redis value: base64 of the task's JSON (args, kwargs, embed).
BODY = re.compile(r'"body": ?"([A-Za-z0-9+/=]{8,})"')


def decoded_bodies(text: str) -> str:
    """The decoded bodies of every kombu message in ``text`` (a secret there would be base64)."""
    out = []
    for match in BODY.finditer(text):
        try:
            out.append(base64.b64decode(match.group(1)).decode("utf-8", errors="replace"))
        except (binascii.Error, ValueError):
            continue
    return "\n".join(out)


def _read_all(paths: Iterable[Path]) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths if p.is_file())


def sources(stack: ChaosStack, facts: Facts) -> dict[str, tuple[str, str]]:
    """Each place searched: (its text, a non-secret marker the text must contain)."""
    aof = sorted(p for p in stack.redis.directory.rglob("*") if p.is_file() and "aof" in p.name)
    metrics = "\n".join(stack.scrape(url) for url in stack.live_metrics_urls())
    aof_text = _read_all(aof)
    broker = "\n".join(facts.broker_messages)
    task_path = '"path": "chaos/'
    places = {
        "logs": (_read_all(stack.our_logs()), "rotation_stored"),
        "redis keys": (redis_dump(stack.client), keys.PREFIX),
        "redis AOF (every write)": (aof_text, "scaivault.rotate"),
        "AOF message bodies": (decoded_bodies(aof_text), task_path),
        "broker messages": (broker, "scaivault.rotate"),
        "broker message bodies": (decoded_bodies(broker), task_path),
        "metrics": (metrics, "scaivault_rotator_rotations_total"),
        "CLI output": ("\n".join(facts.cli_outputs) or "(no CLI run)", ""),
    }
    if stack.postgres is not None:
        places["PostgreSQL server log"] = (stack.postgres.server.log_text(), "ALTER ROLE")
    if stack.acl is not None:  # hashes only: the rotator never sends a plaintext
        admin = f"user {stack.acl.admin['username']}"
        places["ACL file"] = (_read_all([stack.acl.acl_file]), admin)
    return places


def no_secret_anywhere(world: World) -> Check:
    """No sentinel occurs in any searched place, and each place was really read."""
    sentinels = world.secret_values()
    places = sources(world.stack, world.facts)
    check = Check("no secret sentinel in logs, Redis, broker messages or metrics", len(sentinels))
    for place, (text, marker) in places.items():
        if marker not in text:
            check.problems.append(f"{place}: nothing read (marker {marker!r} missing)")
        leaked = sum(1 for value in sentinels if value in text)
        if leaked:
            check.problems.append(f"{place}: {leaked} secret value(s) found")
    sizes = ", ".join(f"{name} {len(text) // 1024} KiB" for name, (text, _) in places.items())
    check.note = f"{len(sentinels)} sentinels; searched {sizes}"
    return check
