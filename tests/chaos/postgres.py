"""The chaos scenario's PostgreSQL target: ``postgres-dual`` secrets with connected consumers.

Each PostgreSQL secret has a consumer that connects with the secret's original login when the
scenario starts and stays connected until its rotation's finalize has been seen waiting for it
(``waiting`` on the run), then disconnects a moment later, noting when (so every rotation can
end). Consumers still connected when the scenario has settled disconnect then. The checks use what
they noted: the old role's password must never be revoked while its consumer was connected, nor
before grace ended, and it must be refused once the rotation is done.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from orchestrator.local.postgres_target import PostgresTarget
from orchestrator.state.runs import RunStore

#: The ``application_name`` of the scenario's consumers.
CONSUMER = "chaos-consumer"


def login_answer(target: PostgresTarget, data: dict[str, Any]) -> bool | None:
    """True if the server lets ``data``'s login in, False if it refuses it, None if unknown."""
    try:
        return target.accepts(data)
    except psycopg.Error:
        return None


@dataclass
class Held:
    """One consumer's connection and what happened to it. ``accepted_at_leave`` is whether a
    new login with the consumer's password still worked just before it disconnected: False
    means the password was revoked while the consumer was connected."""

    data: dict[str, Any]
    conn: psycopg.Connection[Any] | None
    saw_wait: bool = False
    left_at: datetime | None = None
    accepted_at_leave: bool | None = None


class Consumers:
    """A thread holding one consumer connection per PostgreSQL secret until finalize waits."""

    def __init__(self, target: PostgresTarget, store: RunStore, rng: random.Random) -> None:
        self.target = target
        self.store = store
        self.rng = rng
        self.held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-consumers", daemon=True)

    def connect(self, path: str, data: dict[str, Any]) -> None:
        """Connect a consumer of ``path`` with ``data`` (the original login)."""
        self.held[path] = Held(dict(data), self.target.connect(data, CONSUMER))

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
            held.accepted_at_leave = login_answer(self.target, held.data)
            held.left_at = datetime.now(UTC)
            held.conn.close()
            held.conn = None
