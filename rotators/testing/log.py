"""What a rotator logs, kept unredacted so a test can search it for secret values.

:class:`CapturingLog` stands in for ``ctx.log``; :class:`RecordListHandler` keeps the text of
every record the ``logging`` module sees, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any


class CapturingLog:
    """A :class:`~rotators.contract.Logger` that keeps every event and field, unredacted."""

    def __init__(self, **bound: Any) -> None:
        self.bound = bound
        self.events: list[dict[str, Any]] = []

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.events.append({"level": level, "event": event, **self.bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def text(self) -> str:
        """Every captured event as JSON lines (``repr`` for values JSON cannot encode)."""
        return "\n".join(json.dumps(e, default=repr) for e in self.events)


class RecordListHandler(logging.Handler):
    """A logging handler appending each record's message and traceback to ``records``."""

    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.records.append(text)
