"""Duration text as ScaiVault writes it: ``90d``, ``48h``, ``30m``, ``15s`` and ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

#: Longest duration accepted anywhere (events, routing file, CLI, settings, the emulator's
#: policies): ten years. Longer ones cannot be added to a timestamp near the end of the
#: calendar, and no grace period or rotation interval needs them.
MAX_DURATION = timedelta(days=3650)
MAX_DURATION_TEXT = "3650d (10 years)"

_PART = re.compile(r"([0-9]{1,9})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_ORDER = "dhms"

HELP = "use whole numbers with units d, h, m, s in that order, e.g. 90d, 48h, 30m, 15s or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a ``timedelta`` of at most :data:`MAX_DURATION`.

    Raises ``ValueError`` saying what is expected, and nothing else, for any input.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {type(text).__name__}: {HELP}")
    return _parse(text)


@lru_cache(maxsize=256)  # every rotation parses its grace period; there are few distinct ones
def _parse(text: str) -> timedelta:
    stripped = text.strip()
    parts = _PART.findall(stripped)
    units = [unit for _, unit in parts]
    if (
        not parts
        or "".join(n + u for n, u in parts) != stripped
        or len(set(units)) != len(units)
        or units != sorted(units, key=_ORDER.index)
    ):
        raise ValueError(f"{text[:40]!r} is not a duration: {HELP}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds > MAX_DURATION.total_seconds():  # checked before timedelta() can overflow
        raise ValueError(f"{text[:40]!r} is longer than the maximum duration, {MAX_DURATION_TEXT}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Format ``delta`` the way :func:`parse_duration` reads it (``1h30m``; ``0s`` for zero)."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit in _ORDER:
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
