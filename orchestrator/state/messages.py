"""The task messages on the queue: the contract's task names, the rotate request's arguments, and
the exact bytes kombu's Redis transport pushes for them.

Every part that enqueues or reads a rotation (the receiver, the CLI, the sweep re-driving a run,
the pending events, the worker's task) goes through :class:`RotateRequest`: one mapping between
a request and the task's keyword arguments, which are ids and paths only, never secret data.
:func:`task_message` builds a message without a Celery producer: the receiver and the sweep
push it with a Lua script (kombu's producer can block while Redis is away).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.state import keys


class Task(StrEnum):
    """The contract's task names (docs/architecture.md#tasks-and-redis); publishers use them."""

    ROTATE = "scaivault.rotate"
    FINALIZE = "scaivault.finalize"
    SWEEP = "scaivault.sweep"
    RECONCILE = "scaivault.reconcile"
    ROLLBACK = "scaivault.rollback"


#: The keyword arguments of ``scaivault.rotate`` (docs/architecture.md#tasks-and-redis), in order.
ROTATE_ARGUMENTS = (
    "path",
    "trigger",
    "event_id",
    "from_version",
    "grace_period",
    "actor",
    "reason",
)

#: Arguments sent only when set (older workers log them as unknown and go on).
_OPTIONAL_ARGUMENTS = ("rotation_id", "max_concurrent")


@dataclass(frozen=True)
class RotateRequest:
    """One ``scaivault.rotate``: ids and paths only, never secret data.

    ``rotation_id`` is set only to resume a run that exists (the sweep re-driving a run whose
    worker died, ``retry``). ``max_concurrent`` is a batch's own cap below its target's budget
    (``rotate --prefix --concurrency``), sent only when set.
    """

    path: str
    trigger: str = "schedule"
    event_id: str | None = None
    from_version: int | None = None
    grace_period: str | None = None
    actor: str | None = None
    reason: str | None = None
    rotation_id: str | None = None
    max_concurrent: int | None = None

    def to_kwargs(self) -> dict[str, Any]:
        """The task's keyword arguments (``rotation_id`` and ``max_concurrent`` only when set)."""
        kwargs = {name: getattr(self, name) for name in ROTATE_ARGUMENTS}
        for name in _OPTIONAL_ARGUMENTS:
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RotateRequest:
        """The request in a task's keyword arguments; raises ValueError without a ``path``.
        Names it does not know are ignored (a newer publisher's)."""
        path = kwargs.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("a rotate request needs a path")
        version = kwargs.get("from_version")
        cap = kwargs.get("max_concurrent")  # advisory: one that cannot be read is dropped
        return cls(
            path=path,
            trigger=str(kwargs.get("trigger") or "schedule"),
            event_id=_text(kwargs.get("event_id")),
            from_version=int(version) if version is not None else None,
            grace_period=_text(kwargs.get("grace_period")),
            actor=_text(kwargs.get("actor")),
            reason=_text(kwargs.get("reason")),
            rotation_id=_text(kwargs.get("rotation_id")),
            max_concurrent=_cap(cap),
        )

    @staticmethod
    def unknown(kwargs: Mapping[str, Any]) -> list[str]:
        """Names in ``kwargs`` that are not the request's (logged, never used)."""
        return sorted(set(kwargs) - {*ROTATE_ARGUMENTS, *_OPTIONAL_ARGUMENTS})


def _cap(value: Any) -> int | None:
    """A batch cap: a whole number of 1 or more, else None."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        cap = int(value)
    except ValueError:
        return None
    return cap if cap >= 1 else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_REPLY_TO = str(uuid.uuid4())
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(
    task: str,
    kwargs: Mapping[str, Any],
    *,
    task_id: str | None = None,
    queue: str = keys.TASK_QUEUE,
    trace: Mapping[str, str] | None = None,
) -> tuple[str, bytes]:
    """Return ``(task_id, payload)``: the bytes kombu's Redis transport would ``LPUSH`` for
    ``send_task(task, kwargs=kwargs, queue=queue)`` (Celery protocol 2, JSON, priority 0).

    ``trace`` (W3C ``traceparent``/``tracestate``, from :func:`orchestrator.tracing.carrier`)
    goes into the message headers, where the worker's Celery instrumentation picks the trace
    up. The envelope is filled into a pre-serialised template (a third of the cost of dumping
    the nested dicts each time); a unit test keeps it equal to what Celery and kombu produce.
    """
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([[], dict(kwargs), _EMBED]).encode()
    payload = _template(task, queue) % {
        "body": base64.b64encode(body).decode("ascii"),
        "id": _json_chars(task_id),
        "kwargsrepr": _json_chars(repr(dict(kwargs))),
        "tag": str(uuid.uuid4()),
    }
    if trace:
        envelope = json.loads(payload)
        envelope["headers"].update(trace)
        payload = json.dumps(envelope)
    return task_id, payload.encode()


def _json_chars(text: str) -> str:
    """``text`` escaped for the inside of a JSON string."""
    return json.dumps(text)[1:-1]


@functools.cache
def _template(task: str, queue: str) -> str:
    """The kombu Redis envelope of a Celery protocol-2 message for ``task`` on ``queue``, with
    ``%(body)s``, ``%(id)s``, ``%(kwargsrepr)s`` and ``%(tag)s`` slots inside JSON strings."""
    marker = "\x00slot:%s\x00"
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": marker % "id",
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": marker % "id",
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": marker % "kwargsrepr",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": marker % "body",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": marker % "id",
            "reply_to": _REPLY_TO,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": marker % "tag",
        },
    }
    text = json.dumps(envelope).replace("%", "%%")
    return re.sub(r"\\u0000slot:(\w+)\\u0000", r"%(\1)s", text)


def message_kwargs(message: bytes | str) -> dict[str, Any]:
    """The keyword arguments inside a message built by :func:`task_message`."""
    envelope = json.loads(message)
    body = json.loads(base64.b64decode(envelope["body"]))
    kwargs: dict[str, Any] = body[1]
    return kwargs
