"""Rebuilding due-queue entries from ScaiVault metadata (``finalize_after``) after Redis lost data.

Every secret under the routing rules whose current version we wrote and whose run is missing
(or in grace) gets its run record and due entry back, so finalization is delayed, never skipped.

Metadata is writable by anyone who may write the secret, so nothing in it is taken on trust: the
rotation id must be bound to the path it was found on (:func:`orchestrator.engine.ids.bound_to`),
the versions must be versions, and the due time is never earlier than the whole grace period after
the version was created. An entry that fails a check is skipped and reported; the other paths are
reconciled all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.duration import parse_duration
from orchestrator.engine.ids import bound_to
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import Untrusted, reason_of
from orchestrator.state.records import RunRecord
from orchestrator.vault.client import VersionInfo
from rotators.versions import ROTATED_BY, parse_time


@dataclass(frozen=True)
class Claim:
    """What a version's metadata claims about the run that wrote it, once checked."""

    rotation_id: str
    from_version: int
    due: datetime
    event_id: str | None


class Reconciler:
    """Re-adds the due entries (and run records) that ScaiVault's metadata says are missing."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def reconcile(self) -> int:
        """Reconcile every routed path; returns how many due entries were added."""
        added = skipped = 0
        for prefix in self.rt.routing.prefixes():
            for path in self.rt.vault.list(prefix):
                if self.rt.routing.match(path) is None:
                    continue
                try:
                    added += self._reconcile_path(path)
                except Exception as exc:  # one bad path must not stop the others
                    skipped += 1
                    self.rt.log.warning(
                        "reconcile_path_skipped", path=path, reason=reason_of(exc, "reconcile")
                    )
        self.rt.log.info("reconcile_done", added=added, skipped=skipped)
        return added

    def _reconcile_path(self, path: str) -> int:
        versions = self.rt.vault.versions(path)
        if not versions or versions[-1].metadata.get("rotated_by") != ROTATED_BY:
            return 0
        claim = self._claim(path, versions[-1])
        record = self.rt.runs.get(claim.rotation_id)
        if record is not None and record.path != path:
            raise Untrusted(f"rotation id {claim.rotation_id} belongs to a run of another path")
        if record is None:
            record = self._rebuild(path, claim, versions[-1].version)
        if record.state != "grace":
            return 0
        due = int(claim.due.timestamp() * 1000)
        return int(self.rt.due.schedule(record.rotation_id, due))

    def _claim(self, path: str, latest: VersionInfo) -> Claim:
        meta = latest.metadata
        rid, event_id = meta.get("rotation_id"), meta.get("event_id")
        previous = _version(meta.get("previous_version"))
        after = parse_time(meta.get("finalize_after"))
        if not isinstance(rid, str) or previous is None or after is None:
            raise Untrusted("rotation_id, previous_version or finalize_after is missing or garbled")
        if not 1 <= previous < latest.version:
            raise Untrusted(f"previous_version is not a version before {latest.version}")
        event = event_id if isinstance(event_id, str) else None
        if not bound_to(rid, path, previous, event):
            raise Untrusted(f"rotation id {rid[:40]!r} is not derived from this path")
        created = parse_time(latest.created_at)
        if created is not None:  # the whole grace period after the version became readable
            after = max(after, created + self._grace(path, meta))
        return Claim(rid, previous, after, event)

    def _grace(self, path: str, meta: dict[str, Any]) -> timedelta:
        """The grace period metadata claims, never under ``ROTATOR_MIN_GRACE`` (a writer of
        metadata must not get an old credential revoked at the next sweep)."""
        try:
            return max(parse_duration(str(meta.get("grace_period"))), self.rt.settings.min_grace())
        except ValueError:
            rule = self.rt.routing.match(path)
            if rule is not None and rule.grace_period is not None:
                return rule.grace_period
            return parse_duration(self.rt.settings.rotator_default_grace)

    def _rebuild(self, path: str, claim: Claim, version: int) -> RunRecord:
        rule = self.rt.routing.match(path)
        record = self.rt.runs.create(
            RunRecord(
                rotation_id=claim.rotation_id,
                path=path,
                state="grace",
                step="grace",
                trigger="reconcile",
                # Never from metadata (docs/architecture.md, invariant I6).
                rotator=rule.rotator if rule else None,
                target=rule.target.target if rule else None,
                event_id=claim.event_id,
                actor="reconcile",
                reason="rebuilt from ScaiVault metadata after Redis lost the run",
                from_version=claim.from_version,
                new_version=version,
                finalize_after=claim.due.isoformat(timespec="milliseconds"),
            )
        )
        self.rt.log.warning("rotation_reconciled", rotation_id=claim.rotation_id, path=path)
        self.rt.runs.history(record, "rotation_reconciled", state="grace", new_version=version)
        return record


def _version(value: Any) -> int | None:
    """A version number from metadata (an int, or digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    return None
