"""Rebuilding due-queue entries from ScaiVault metadata (``finalize_after``) after Redis lost data.

Every secret under the routing rules whose current version we wrote and whose run is missing
(or in grace) gets its run record and due entry back, so finalization is delayed, never skipped.
"""

from __future__ import annotations

from typing import Any

from orchestrator.driver import ROTATED_BY, parse_time
from orchestrator.due import to_ms
from orchestrator.errors import VaultError
from orchestrator.failure import reason_of
from orchestrator.runtime import Runtime
from orchestrator.store import PathBusy, RunRecord


class Reconciler:
    """Re-adds the due entries (and run records) that ScaiVault's metadata says are missing."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def reconcile(self) -> int:
        """Reconcile every routed path; returns how many due entries were added."""
        added = 0
        for prefix in self.rt.routing.prefixes():
            for path in self.rt.vault.list(prefix):
                if self.rt.routing.match(path) is None:
                    continue
                try:
                    added += self._reconcile_path(path)
                except (VaultError, PathBusy) as exc:
                    self.rt.log.warning("reconcile_path_failed", path=path, reason=reason_of(exc))
        self.rt.log.info("reconcile_done", added=added)
        return added

    def _reconcile_path(self, path: str) -> int:
        versions = self.rt.vault.versions(path)
        if not versions:
            return 0
        latest = versions[-1]
        meta = latest.metadata
        rid, after = meta.get("rotation_id"), parse_time(meta.get("finalize_after"))
        if meta.get("rotated_by") != ROTATED_BY or not rid or after is None:
            return 0
        record = self.rt.store.get(str(rid))
        if record is None:
            record = self._rebuild(path, str(rid), latest.version, meta)
        if record.state != "grace":
            return 0
        return int(self.rt.due.schedule(record.rotation_id, to_ms(after)))

    def _rebuild(self, path: str, rid: str, version: int, meta: dict[str, Any]) -> RunRecord:
        rule = self.rt.routing.match(path)
        previous = meta.get("previous_version")
        record = self.rt.store.create(
            RunRecord(
                rotation_id=rid,
                path=path,
                state="grace",
                step="grace",
                trigger="reconcile",
                rotator=rule.rotator if rule else None,  # never from metadata (I6)
                actor="reconcile",
                reason="rebuilt from ScaiVault metadata after Redis lost the run",
                from_version=int(previous) if isinstance(previous, int | str) else None,
                new_version=version,
                finalize_after=str(meta.get("finalize_after")),
            )
        )
        self.rt.log.warning("rotation_reconciled", rotation_id=rid, path=path)
        self.rt.journal.history(record, "rotation_reconciled", state="grace", new_version=version)
        return record
