"""Rule globs: what makes one unusable, and matching a secret path against one.

``*`` matches one path segment (or part of one: ``db-*``), ``**`` any number of whole segments.
"""

from __future__ import annotations

import re

_BAD_GLOB_CHARS = re.compile(r"[?\[\]{}\s]")


def check_glob(glob: str) -> str | None:
    """What is wrong with a ``match`` glob, or None when it is usable."""
    if not glob.strip():
        return "is empty; write a path glob such as 'integrations/salesforce/*'"
    if glob.startswith("/") or glob.endswith("/") or "//" in glob:
        return "has an empty segment or a leading/trailing '/'; write 'a/b/*' style paths"
    if _BAD_GLOB_CHARS.search(glob):
        return "contains whitespace or ?[]{}; only * (one segment) and ** (any) are wildcards"
    for segment in glob.split("/"):
        if "**" in segment and segment != "**":
            return f"segment {segment!r}: ** must be a whole segment, e.g. 'a/**/b'"
        if segment in {".", ".."}:
            return "must not contain '.' or '..' segments"
    return None


def literal_prefix(glob: str) -> str:
    """The part of a routing glob before its first wildcard segment."""
    literal = []
    for segment in glob.split("/"):
        if "*" in segment:
            break
        literal.append(segment)
    return "/".join(literal)


def glob_matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    """True when ``segments`` match the glob ``pattern``.

    Walks the path once, keeping the set of glob positions reachable so far (a ``**`` both
    stays put on a segment and may be skipped). Each segment is compared at most once with
    each glob segment, so several ``**`` on a long path cost at most
    ``len(pattern) * len(segments)`` comparisons, where trying every split of every ``**``
    grows exponentially with their number.
    """
    end = len(pattern)
    positions = _past_globstars(pattern, {0})
    for segment in segments:
        moved = {
            p if pattern[p] == "**" else p + 1
            for p in positions
            if p < end and segment_matches(pattern[p], segment)
        }
        if not moved:
            return False
        positions = _past_globstars(pattern, moved)
    return end in positions


def _past_globstars(pattern: tuple[str, ...], positions: set[int]) -> set[int]:
    """``positions`` plus every position reached by letting ``**`` match no segment."""
    out: set[int] = set()
    for p in positions:
        while p not in out:  # a position already in ``out`` brought its own skips along
            out.add(p)
            if p == len(pattern) or pattern[p] != "**":
                break
            p += 1
    return out


def segment_matches(pattern: str, segment: str) -> bool:
    """One glob segment against one path segment; ``**`` (like ``*``) matches any one."""
    if "*" not in pattern:
        return pattern == segment
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, segment) is not None
