"""The chaos scenario's consumers: applications connected with a secret's original login.

Each ``postgres-dual`` and ``redis-acl`` secret has a consumer that connects with the secret's
original login when the scenario starts and stays connected until its rotation's finalize has
been seen waiting for it (``waiting`` on the run), then disconnects a moment later, noting when
(so every rotation can end). Consumers still connected when the scenario has settled disconnect
then. The checks use what they noted: the old login must never be revoked while its consumer was
connected, nor before grace ended, and it must be refused once the rotation is done.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.state.runs import RunStore

#: The client name the scenario's consumers connect with.
CONSUMER = "chaos-consumer"


class Connection(Protocol):
    def close(self) -> None: ...


class LoginTarget(Protocol):
    """A system the scenario's secrets log in to (:class:`~orchestrator.local.postgres_target.
    PostgresTarget`, :class:`~tests.chaos.redis_acl.AclTarget`)."""

    def connect(self, data: dict[str, Any], application_name: str) -> Connection: ...

    def accepts(self, data: dict[str, Any]) -> bool: ...


def login_answer(target: LoginTarget, data: dict[str, Any]) -> bool | None:
    """True if ``target`` lets ``data``'s login in, False if it refuses it, None if unknown
    (the server did not answer: its ``accepts`` raised)."""
    try:
        return target.accepts(data)
    except Exception:  # a connection error says nothing about the login
        return None


@dataclass
class Held:
    """One consumer's connection and what happened to it. ``accepted_at_leave`` is whether a
    new login with the consumer's password still worked just before it disconnected: False
    means the password was revoked while the consumer was connected."""

    target: LoginTarget
    data: dict[str, Any]
    conn: Connection | None
    saw_wait: bool = False
    left_at: datetime | None = None
    accepted_at_leave: bool | None = None


class Consumers:
    """A thread holding consumer connections until their path's finalize waits for them."""

    def __init__(self, store: RunStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumers", daemon=True)

    def connect(self, path: str, target: LoginTarget, data: dict[str, Any]) -> None:
        """Connect a consumer of ``path`` to ``target`` with ``data`` (the original login)."""
        self.held[path] = Held(target, dict(data), target.connect(data, CONSUMER))

    def start(self) -> Consumers:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and disconnect every consumer still connected."""
        self._stop.set()
        self._thread.join(timeout=30)
        for path in list(self.held):
            self._leave(path)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for path, held in list(self.held.items()):
                if held.conn is None:
                    continue
                try:
                    record = self.store.last(path)
                except Exception:  # Redis restarting: look again next round
                    break
                if record is not None and record.state == "grace" and record.waiting:
                    held.saw_wait = True
                    if self.rng.random() < 0.3:  # stay a moment longer, sometimes
                        self._leave(path)

    def _leave(self, path: str) -> None:
        """Check the password still logs in, note the time, then disconnect (in this order:
        until the connection closes, finalize must see it in use)."""
        with self._lock:
            held = self.held[path]
            if held.conn is None:
                return
            held.accepted_at_leave = login_answer(held.target, held.data)
            held.left_at = datetime.now(UTC)
            held.conn.close()
            held.conn = None
