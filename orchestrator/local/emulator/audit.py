"""The audit trail: every read, write, listing, rotation and denial, with who and when."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from orchestrator.local.emulator.pattern import glob_match
from orchestrator.local.emulator.state import iso

MAX_ENTRIES = 50_000


class AuditTrail:
    """The newest ``MAX_ENTRIES`` accesses, in memory (not kept in the state file)."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)

    def record(
        self, at: datetime, identity: str, action: str, path: str, outcome: str, **extra: Any
    ) -> None:
        """Append one access; ``extra`` holds details such as ``version`` (never data)."""
        self.entries.append(
            {"at": iso(at), "identity": identity, "action": action, "path": path,
             "outcome": outcome, **extra}
        )  # fmt: skip

    def query(self, path: str | None, identity: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries on ``path`` (exact or glob) by ``identity``."""
        found = [
            e
            for e in self.entries
            if (path is None or e["path"] == path or glob_match(path, e["path"]))
            and (identity is None or e["identity"] == identity)
        ]
        return found[-limit:]

    def clear(self) -> None:
        self.entries.clear()
