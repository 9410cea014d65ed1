"""Duration text as ScaiVault writes it (``90d``, ``48h``, ``1h30m``): the orchestrator's name for
:mod:`rotators.duration`, which rotators share (they never import the orchestrator)."""

from __future__ import annotations

from rotators.duration import (
    HELP,
    MAX_DURATION,
    MAX_DURATION_TEXT,
    format_duration,
    parse_duration,
)

__all__ = ["HELP", "MAX_DURATION", "MAX_DURATION_TEXT", "format_duration", "parse_duration"]
