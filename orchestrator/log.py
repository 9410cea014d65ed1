"""Structured logging: JSON lines by default, a console renderer for humans, redaction always.

Log events are snake_case facts with data as fields (``log.info("rotation_stored", path=...)``).
The redaction processor is the second line of defence after the :class:`~rotators.Secret` and
:class:`~rotators.SecretData` wrappers: it blanks values of known sensitive keys and any wrapped
secret, at any depth, before a renderer sees them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

from rotators.secret import REDACTED, Secret, SecretData

SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "session_id",
        "authorization",
        "api_key",
        "private_key",
        "data",
        "new",
        "old",
        "sealed",
        "signature",
        "x-scaivault-signature",
        "cookie",
        "set-cookie",
    }
)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Secret | SecretData):
        return REDACTED
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in SENSITIVE_KEYS else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank sensitive keys and wrapped secrets anywhere in the event."""
    for key, value in list(event_dict.items()):
        if key.lower() in SENSITIVE_KEYS and key != "event":
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog, stdlib logging (Celery, uvicorn) and warnings through one redacting
    renderer, so that in JSON mode a log shipper gets nothing but JSON lines."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # first: a dropped DEBUG line costs nothing more
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Warnings (Celery's SecurityWarning, deprecations) are log lines too, not bare stderr text.
    logging.captureWarnings(True)
    # httpx logs every request URL at INFO; keep it at WARNING so URLs with queries stay quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def say_as_log(message: str, *_: Any) -> None:
    """Write a line a library would print (Celery's ``worker: Warm shutdown``) as a log event.

    Called from signal handlers: it writes one line with ``os.write`` and takes no lock, so it
    cannot deadlock on a handler the signal interrupted.
    """
    line = json.dumps(
        {
            "event": message.strip(),
            "level": "info",
            "logger": "celery.apps.worker",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    )
    with contextlib.suppress(OSError):
        os.write(sys.__stderr__.fileno() if sys.__stderr__ else 2, (line + "\n").encode())


def get_logger(name: str | None = None, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A bound structlog logger; ``bound`` fields go on every line it writes."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**bound) if bound else logger
