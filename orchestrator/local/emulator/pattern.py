"""Path globs as ScaiVault writes them: ``*`` is one path segment, ``**`` any number of them."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression for ``pattern`` (``**/`` also matches zero segments)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    """True when ``path`` matches ``pattern``."""
    return compile_glob(pattern).match(path) is not None


def any_match(patterns: list[str], path: str) -> bool:
    """True when ``path`` matches at least one of ``patterns``."""
    return any(glob_match(pattern, path) for pattern in patterns)
