"""The metadata the engine writes on every secret version it stores
(docs/architecture.md#the-protocol, step 5).

One builder, used by the engine and by the conformance kit, so a rotator tested with the kit
sees exactly the metadata it meets in production: the caller's own metadata (description,
tags) is kept, and the engine's bookkeeping fields are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rotators.duration import parse_duration

#: ``rotated_by`` on every version the engine writes.
ROTATED_BY = "scaivault-rotator"

#: The fields the engine owns on a version it wrote. ``finalize_after`` is the earliest time the
#: old credential may be revoked as the storing worker saw it before the write; the run's due
#: time is counted again from the moment the version was stored. ``grace_period`` lets a rebuild
#: after Redis data loss count grace from the version's own ``created_at``.
ENGINE_FIELDS = (
    "rotation_id",
    "rotator",
    "previous_version",
    "finalize_after",
    "grace_period",
    "event_id",
    "rotated_by",
)

#: What a rollback writes on the version it restores; not carried to later versions either.
ROLLBACK_FIELDS = ("rolled_back_rotation_id", "rolled_back_from_version", "restored_version")


def version_metadata(
    current: Mapping[str, Any],
    *,
    rotation_id: str,
    rotator: str,
    previous_version: int,
    finalize_after: datetime,
    grace_period: str,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The metadata of a new version rotated from one whose metadata is ``current``.

    ``event_id`` (the ``rotation.due`` event that started the run, if any) binds a scheduled
    run's id to its path: a rebuild can derive the id again and refuse ids planted elsewhere.
    """
    dropped = (*ENGINE_FIELDS, *ROLLBACK_FIELDS)
    kept = {key: value for key, value in current.items() if key not in dropped}
    metadata = {
        **kept,
        "rotation_id": rotation_id,
        "rotator": rotator,
        "previous_version": previous_version,
        "finalize_after": finalize_after.isoformat(timespec="seconds"),
        "grace_period": grace_period,
        "rotated_by": ROTATED_BY,
    }
    if event_id is not None:
        metadata["event_id"] = event_id
    return metadata


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as metadata and run records hold it (naive means UTC), or ``None``
    when it is absent or not a time: garbage in metadata must never raise."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def finalize_due(metadata: Mapping[str, Any], created_at: str | None) -> datetime | None:
    """When the credential a version replaced may be revoked, by that version's metadata: not
    before ``finalize_after`` nor before a whole ``grace_period`` after the version was created
    (``finalize_after`` is set before the write's retries, and anyone who may write the secret
    may set it). ``None`` when any of the three is missing or garbled: not known to be due."""
    after = parse_time(metadata.get("finalize_after"))
    created = parse_time(created_at)
    grace = metadata.get("grace_period")
    if after is None or created is None or not isinstance(grace, str):
        return None
    try:
        return max(after, created + parse_duration(grace))
    except ValueError:
        return None
