"""Liveness on the host: a heartbeat file per process that its work loop rewrites, the check the
``scaivault-rotator health`` exec probe runs on it, and systemd's watchdog notifications.

The file lives in ``ROTATOR_HEARTBEAT_DIR`` as ``scaivault-rotator-<role>-<pid>.heartbeat`` and
holds the time of the last beat; the probe needs no Redis, so Redis going down never makes a
supervisor restart healthy processes (the worker beats while it reconnects,
:mod:`orchestrator.worker.heartbeat`). A process removes its file when it stops cleanly.
This module imports no Celery: the probe starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "scaivault-rotator-"


def heartbeat_file(directory: Path, role: str, pid: int) -> Path:
    """Where process ``pid`` of ``role`` keeps its heartbeat."""
    return directory / f"{PREFIX}{role}-{pid}.heartbeat"


def write_heartbeat(path: Path, node: str) -> None:
    """Record a beat now (written aside and renamed, so a reader never sees half a file)."""
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps({"pid": os.getpid(), "node": node, "at": time.time()}))
    os.replace(aside, path)


def remove_heartbeat(path: Path) -> None:
    """Take the file away (a clean stop)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass(frozen=True)
class Verdict:
    """The probe's answer: ``alive`` and one line saying why."""

    alive: bool
    reason: str


def check(directory: Path, role: str, max_age: float) -> Verdict:
    """Is a ``role`` process on this host beating? Judged by its newest heartbeat file."""
    beats = []
    for path in directory.glob(f"{PREFIX}{role}-*.heartbeat"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            beats.append(json.loads(path.read_text())) if path.is_file() else None
    if not beats:
        return Verdict(False, f"no {role} heartbeat in {directory}: not started, or stopped")
    newest = max(beats, key=lambda beat: float(beat["at"]))
    age = max(0.0, time.time() - float(newest["at"]))
    who = f"{role} {newest.get('node') or ''} pid {newest.get('pid')}".replace("  ", " ")
    if age > max_age:
        return Verdict(False, f"{who}: last heartbeat {age:.0f}s ago (over {max_age:g}s)")
    return Verdict(True, f"{who}: last heartbeat {age:.1f}s ago")


def notify_systemd(socket_path: str | None, message: str) -> None:
    """Send ``message`` (``READY=1``, ``WATCHDOG=1``) to systemd's ``NOTIFY_SOCKET``, if any.

    The sd_notify datagram protocol: an abstract socket when the path starts with ``@``.
    """
    if not socket_path:
        return
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
