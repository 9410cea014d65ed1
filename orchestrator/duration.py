"""Duration text as ScaiVault writes it: ``90d``, ``48h``, ``30m``, ``15s`` and ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_PART = re.compile(r"(\d{1,9})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_ORDER = "dhms"

HELP = "use whole numbers with units d, h, m, s in that order, e.g. 90d, 48h, 30m, 15s or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a ``timedelta``; raise ``ValueError`` saying what is expected."""
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
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


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
