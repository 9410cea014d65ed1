"""Start, watch and stop the child processes of a local stack (Redis, emulator, receiver, ...).

Used by ``scaivault-rotator demo`` and by the integration and chaos tests, so both run the
real processes the same way. Every child gets its own process group, so stopping it (or
SIGKILLing it in a crash test) also reaches the pool processes it forked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import httpx

from orchestrator.errors import StackError

REDIS_INSTALL_HINT = (
    "redis-server was not found on PATH. Install it (Debian/Ubuntu: apt-get install "
    "redis-server; macOS: brew install redis) or point REDIS_URL at a reachable Redis."
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cli_argv(*args: str) -> list[str]:
    """The argv that runs ``scaivault-rotator ARGS`` with this interpreter."""
    return [sys.executable, "-m", "orchestrator", *args]


class ChildProcess:
    """One child process with its output in a log file, in a process group of its own."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        """Start the process (its output appends to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the process wrote, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _died(self, waiting_for: str) -> StackError:
        code = self.proc.returncode if self.proc else None
        return StackError(
            f"{self.name} exited (code {code}) while waiting for {waiting_for}; "
            f"its log {self.log_path} ends with:\n{self.log_tail()}"
        )

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers with a status below 500."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise self._died(url)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0, verify=False).status_code < 500:  # noqa: S501
                    return
            time.sleep(0.1)
        raise StackError(f"{self.name} did not answer {url} within {timeout:.0f}s")

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        """Wait until something accepts TCP connections on ``host:port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise self._died(f"port {port}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            time.sleep(0.05)
        raise StackError(f"{self.name} did not listen on {host}:{port} within {timeout:.0f}s")

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the process's log contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_tail(10_000):
                return
            if not self.alive:
                raise self._died(repr(text))
            time.sleep(0.1)
        raise StackError(f"{self.name} did not log {text!r} within {timeout:.0f}s")

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process and everything in its process group."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group now, as a crash would, and reap it."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Pool children may outlive their parent briefly; make sure the group is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, with its data in ``directory``."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        appendonly: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(REDIS_INSTALL_HINT)
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        #: More ``redis-server`` arguments (an ACL file, TLS ports and files, ...).
        self.extra = list(extra)
        self.child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart) the server and wait until it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            *self.extra,
        ]  # fmt: skip
        self.child = ChildProcess(f"redis:{self.port}", argv, self.directory / "redis.log").start()
        self.child.wait_port(self.port, timeout=15)
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def restart(self) -> None:
        """Stop and start again on the same port; AOF brings the data back."""
        self.stop()
        self.start()


class Stoppable(Protocol):
    """Anything a :class:`Stack` stops: a child process, a private server."""

    def stop(self) -> None: ...


class Stack:
    """Owns child processes and stops them all, newest first, on exit (also on errors)."""

    def __init__(self) -> None:
        self.children: list[Stoppable] = []

    def add(self, child: Stoppable) -> None:
        self.children.append(child)

    def close(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
