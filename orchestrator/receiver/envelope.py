"""The ScaiVault event envelope, parsed strictly from a verified body.

Run only after the signature check. Errors are :class:`~orchestrator.errors.WebhookRejected`:
400 for bytes that are not acceptable JSON (invalid UTF-8, too deep, duplicate keys, NaN or
Infinity, huge numbers) or a ``created_at`` outside the accepted window, 422 for JSON of the
wrong shape (naming the field). Nothing here raises anything else for any input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.duration import parse_duration
from orchestrator.errors import WebhookRejected

ROTATION_DUE = "rotation.due"
RECORDED_TYPES = frozenset({"secret.rotated", "secret.updated"})
KNOWN_TYPES = RECORDED_TYPES | {ROTATION_DUE}
TRIGGERS = frozenset({"schedule", "manual"})

#: How far in the future ``created_at`` may be (clock skew); keeps the dedupe window sound.
FUTURE_SKEW = timedelta(hours=1)

#: Longest integer literal accepted; versions are small, and this caps int() work.
MAX_INT_DIGITS = 18

_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*")
_MAX_PATH = 512


@dataclass(frozen=True)
class Envelope:
    """A verified, well-formed event. ``path`` is empty for unknown types."""

    id: str
    type: str
    created_at: datetime
    path: str
    data: dict[str, Any]

    @property
    def version(self) -> int | None:
        """``data.version``: the secret version the event is about (validated for known types)."""
        version = self.data.get("version")
        return version if isinstance(version, int) else None

    @property
    def grace_period(self) -> str | None:
        value = self.data.get("grace_period")
        return value if isinstance(value, str) else None

    @property
    def trigger(self) -> str:
        value = self.data.get("trigger")
        return value if isinstance(value, str) else "schedule"


def parse(body: bytes, *, now: datetime, max_age: timedelta) -> Envelope:
    """Decode, validate the shape, then check the age window of ``body``."""
    envelope = shape(decode(body))
    check_age(envelope, now=now, max_age=max_age)
    return envelope


def decode(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, no NaN/Infinity, no huge numbers."""
    try:
        return json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError:
        raise WebhookRejected(400, "invalid_utf8") from None
    except RecursionError:
        raise WebhookRejected(400, "too_deep") from None
    except ValueError:
        raise WebhookRejected(400, "invalid_json") from None


def shape(value: Any) -> Envelope:
    """Validate the envelope's fields; 422 naming the first bad one."""
    if not isinstance(value, dict):
        raise _invalid("body")
    event_id = _match(value, "id", _ID)
    event_type = _match(value, "type", _TYPE)
    created_at = _timestamp(value.get("created_at"))
    data = value.get("data", {})
    if not isinstance(data, dict):
        raise _invalid("data")
    path = ""
    if event_type in KNOWN_TYPES:
        path = _match(value, "path", _PATH, limit=_MAX_PATH)
        _check_data(event_type, data)
    return Envelope(event_id, event_type, created_at, path, data)


def check_age(envelope: Envelope, *, now: datetime, max_age: timedelta) -> None:
    """400 when ``created_at`` is older than ``max_age`` or too far in the future."""
    if now - envelope.created_at > max_age:
        raise WebhookRejected(400, "too_old")
    if envelope.created_at - now > FUTURE_SKEW:
        raise WebhookRejected(400, "from_future")


def _check_data(event_type: str, data: dict[str, Any]) -> None:
    version = data.get("version")
    required = event_type == ROTATION_DUE
    if (version is not None or required) and not _is_version(version):
        raise _invalid("data.version")
    grace = data.get("grace_period")
    if grace is not None and not _is_duration(grace):
        raise _invalid("data.grace_period")
    if data.get("trigger", "schedule") not in TRIGGERS:
        raise _invalid("data.trigger")


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_duration(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 32 or not value.isascii():
        return False
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def _match(value: dict[str, Any], field: str, pattern: re.Pattern[str], limit: int = 128) -> str:
    text = value.get(field)
    if not isinstance(text, str) or len(text) > limit or not pattern.fullmatch(text):
        raise _invalid(field)
    return text


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64 or not value.isascii():
        raise _invalid("created_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("created_at") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _invalid("created_at")
    return parsed


def _invalid(field: str) -> WebhookRejected:
    return WebhookRejected(422, "invalid_event", field=field)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("number too large")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number) or len(text) > 64:
        raise ValueError("number out of range")
    return number
