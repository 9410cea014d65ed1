"""No secret value in Celery messages, Redis, logs or metrics; no ETA beyond seconds
(docs/architecture.md, invariant I3 and protocol step 6).

While a rotation runs (with a Celery retry in it, so a countdown message exists) a thread keeps
snapshotting every key of the broker/state Redis, with every kombu message body decoded. The
old and the new secret value must appear nowhere: not in a snapshot, not in a process log. The
only trace of the new value is the sealed (encrypted) blob in the run record.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from orchestrator.engine.seal import Sealer
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/secret-scan/db"
OLD = "SENTINEL-old-7d3c1a9e"
ALLOWED_KWARGS = {
    "path", "trigger", "event_id", "from_version", "grace_period", "actor", "reason",
    "rotation_id", "lease",
}  # fmt: skip


class Snapshots:
    """Everything in one Redis, as text, taken over and over until stopped."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.texts: list[str] = []
        self.etas: list[float] = []  # seconds between a message's ETA and when it was seen
        self.kwargs: list[dict[str, Any]] = []
        self.sealed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Snapshots:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.take()
        self.client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(0.03)

    def take(self) -> None:
        parts: list[str] = []
        for key in self.client.scan_iter("*"):
            kind = self.client.type(key)
            value: Any
            if kind == "string":
                value = self.client.get(key)
            elif kind == "hash":
                value = self.client.hgetall(key)
                for field in ("sealed", "minted"):
                    if field in value:
                        self.sealed.add(value.pop(field))
            elif kind == "list":
                value = self.client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(self.client.smembers(key))
            elif kind == "zset":
                value = self.client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = self.client.xrange(key)
            else:
                continue
            parts.append(f"{key}: {value}")
            parts.extend(self._messages(value))
        self.texts.append("\n".join(parts))

    def _messages(self, value: Any) -> list[str]:
        """Decoded bodies of the kombu messages inside ``value`` (queue lists, unacked hash)."""
        found: list[str] = []
        items = list(value.values()) if isinstance(value, dict) else value
        for item in items if isinstance(items, list) else []:
            try:
                doc = json.loads(item)
            except (TypeError, ValueError):
                continue
            message = doc[0] if isinstance(doc, list) and doc else doc
            if not isinstance(message, dict) or "body" not in message:
                continue
            body = base64.b64decode(message["body"]).decode()
            found.append(body)
            args, kwargs, _embed = json.loads(body)
            self.kwargs.append({"*args": args, **kwargs} if args else kwargs)
            eta = (message.get("headers") or {}).get("eta")
            if eta:
                when = datetime.fromisoformat(eta)
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
                self.etas.append((when - datetime.now(UTC)).total_seconds())
        return found


def test_no_secret_in_broker_redis_or_logs_and_no_long_eta(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule(hold=["verify"]))
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
    # Two failed PUTs beyond the client's deadline: the engine retries the task with a countdown.
    stack.emulator.fault(match=PATH, methods=["PUT"], code="service_unavailable", count=2,
                         retry_after=0.6)  # fmt: skip
    stack.start(workers=1)
    with Snapshots(stack.redis_url) as snaps:
        stack.publish(path=PATH, event_id="evt_scan", from_version=version)
        rotation_id = stack.reached("verify")
        stack.release("verify")
        stack.wait_run(PATH, "done")
    new = stack.emulator.get_secret(PATH)["data"]["password"]
    assert new != OLD

    assert len(snaps.texts) > 10
    for text in snaps.texts:
        assert OLD not in text and new not in text
    for log in stack.logs(), (stack.tmp_path / "beat.log").read_text():
        assert OLD not in log and new not in log
    assert snaps.kwargs and all(set(k) <= ALLOWED_KWARGS for k in snaps.kwargs)

    # The sealed blob did exist during the rotation, and it holds the new value, encrypted.
    [blob] = snaps.sealed
    sealed = Sealer([stack.seal_key.encode()]).unseal(blob, context=rotation_id)
    assert sealed["password"] == new and new not in blob
    assert stack.store.sealed(rotation_id) is None, "deleted once stored"

    retries = [
        e for e in stack.client.xrange(f"svr:history:{PATH}") if e[1]["event"] == "step_retry"
    ]
    assert retries, "the rotation went through a Celery retry"
    assert snaps.etas, "a retry message with an ETA was seen in the broker"
    assert max(snaps.etas) < 30, f"an ETA {max(snaps.etas):.0f}s ahead: only seconds allowed"
