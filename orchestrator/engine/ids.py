"""Rotation ids: derived from (path, version) for scheduled runs, from (path, task) for manual ones.

A scheduled rotation's id is derived, so every delivery of the same ``rotation.due`` (and any
late duplicate) names one run. Ids read back from ScaiVault metadata (``reconcile``) are
trusted only when they are bound to the path they were found on. A manual id carries its own
binding: a nonce (from the task that asked for it, or random) followed by a digest of (path,
nonce), so an id copied from one path's metadata into another's does not verify there.
"""

from __future__ import annotations

import hashlib
import re
import uuid

_MANUAL = re.compile(r"rot-m(?P<nonce>[0-9a-f]{12})(?P<check>[0-9a-f]{11})")


def scheduled_id(path: str, from_version: int, event_id: str | None = None) -> str:
    """The rotation id of a scheduled rotation: derived from (path, version it rotates from).

    ``event_id`` names a later event's own run once the first one ended without a new version.
    """
    key = f"{path}\0{from_version}" + (f"\0{event_id}" if event_id else "")
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"rot-{digest[:24]}"


def manual_id(path: str, task_id: str | None = None) -> str:
    """The rotation id of a manual rotation of ``path``: derived from the task that asked for
    it, so a message delivered again (a worker died after taking it) names the same run; random
    when there is no task. Bound to ``path`` (see :func:`bound_to`)."""
    seed = uuid.uuid4().hex if task_id is None else task_id
    nonce = hashlib.sha256(seed.encode()).hexdigest()[:12]
    return f"rot-m{nonce}{_check(path, nonce)}"


def _check(path: str, nonce: str) -> str:
    return hashlib.sha256(f"{path}\0{nonce}".encode()).hexdigest()[:11]


def bound_to(rotation_id: str, path: str, from_version: int, event_id: str | None) -> bool:
    """Whether ``rotation_id``, found in ``path``'s metadata, can be that path's own: a manual
    id of ``path``, or the scheduled id derived from (path, version rotated from, event id)."""
    manual = _MANUAL.fullmatch(rotation_id)
    if manual is not None:
        return manual["check"] == _check(path, manual["nonce"])
    candidates = {scheduled_id(path, from_version)}
    if event_id:
        candidates.add(scheduled_id(path, from_version, event_id))
    return rotation_id in candidates
