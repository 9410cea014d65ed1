"""Rotation ids: derived from (path, version) for scheduled runs, random for manual ones.

A scheduled rotation's id is derived, so every delivery of the same ``rotation.due`` (and any
late duplicate) names one run. Ids read back from ScaiVault metadata (``reconcile``) are
trusted only when they are bound to the path they were found on: derived from it, or a manual
id (random, so nobody can plant another path's future one).
"""

from __future__ import annotations

import hashlib
import re
import uuid

_MANUAL = re.compile(r"rot-m[0-9a-f]{23}")


def scheduled_id(path: str, from_version: int, event_id: str | None = None) -> str:
    """The rotation id of a scheduled rotation: derived from (path, version it rotates from).

    ``event_id`` names a later event's own run once the first one ended without a new version.
    """
    key = f"{path}\0{from_version}" + (f"\0{event_id}" if event_id else "")
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"rot-{digest[:24]}"


def manual_id(task_id: str | None = None) -> str:
    """The rotation id of a manual rotation: derived from the task that asked for it, so a
    message delivered again (a worker died after taking it) names the same run; random when
    there is no task."""
    if task_id is None:
        return f"rot-m{uuid.uuid4().hex[:23]}"
    return f"rot-m{hashlib.sha256(task_id.encode()).hexdigest()[:23]}"


def bound_to(rotation_id: str, path: str, from_version: int, event_id: str | None) -> bool:
    """Whether ``rotation_id``, found in ``path``'s metadata, can be that path's own: a manual
    id, or the scheduled id derived from (path, version rotated from, event id)."""
    if _MANUAL.fullmatch(rotation_id):
        return True
    candidates = {scheduled_id(path, from_version)}
    if event_id:
        candidates.add(scheduled_id(path, from_version, event_id))
    return rotation_id in candidates
