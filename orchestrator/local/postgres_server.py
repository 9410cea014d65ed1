"""A private PostgreSQL server in a temp dir, for the demo and the tests: never a shared one.

:class:`PostgresServer` finds the server binaries (``initdb`` and ``postgres`` on ``PATH``, in
``pg_config --bindir``, or the newest ``/usr/lib/postgresql/*/bin``), runs ``initdb`` with
``scram-sha-256`` for every connection and a superuser with a random password, and starts
``postgres`` on a free loopback port with its log (``log_statement = 'all'``) in a file, so a
test can prove what never reaches it. Both refuse to run as root, so as root they run as the
``postgres`` system user (``runuser``), in a directory of their own that user may enter.
:meth:`PostgresServer.stop` shuts it down fast and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import StackError
from orchestrator.local.processes import ChildProcess, free_port

#: Where Debian and Ubuntu put the server binaries (not on PATH there).
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: The system user the server runs as when we are root.
SYSTEM_USER = "postgres"
#: What to do when the binaries are missing.
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, postgres) were not found on PATH, in pg_config "
    "--bindir or in /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: apt-get install "
    "postgresql; macOS: brew install postgresql)."
)
#: What the server logs once it accepts logins.
READY = "database system is ready to accept connections"
#: Server settings for a fast, throwaway server whose log shows every statement.
SETTINGS: Mapping[str, str] = {
    "listen_addresses": "127.0.0.1",
    "log_destination": "stderr",
    "logging_collector": "off",
    "log_statement": "all",
    "log_connections": "on",
    "log_disconnections": "on",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "60",
}


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when they are not installed."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(Path("/").glob(DEBIAN_BINDIRS.lstrip("/")), key=_major, reverse=True)
    candidates += debian
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _major(folder: Path) -> int:
    """15 for ``/usr/lib/postgresql/15/bin`` (0 when the name is not a number)."""
    name = folder.parent.name
    return int(name) if name.isdigit() else 0


@dataclass(frozen=True)
class Superuser:
    """The private server's superuser: how the demo and the tests connect as admin."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Superuser(username={self.username!r}, password=[REDACTED])"


class PostgresServer:
    """One private server on ``127.0.0.1:port``; use :meth:`start` and :meth:`stop`."""

    def __init__(
        self, bindir: Path | None = None, port: int | None = None, log_path: Path | None = None
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise StackError(INSTALL_HINT)
        self.bindir = found
        self.port = port or free_port()
        self._log_path = log_path
        self.superuser = Superuser("postgres", "pg-" + secrets.token_urlsafe(24))
        self.directory: Path | None = None
        self.child: ChildProcess | None = None

    # --- facts -------------------------------------------------------------------------------

    host = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def log_path(self) -> Path:
        """The server's log (stderr): every statement, connection and error; in the server's
        directory unless given (then it outlives :meth:`stop`)."""
        return self._log_path or self._dir() / "server.log"

    def log_text(self) -> str:
        """Everything the server logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _dir(self) -> Path:
        if self.directory is None:
            raise StackError("the PostgreSQL server was never started")
        return self.directory

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """``initdb`` into a new temp dir, then start the server and wait until it listens."""
        self.directory = Path(tempfile.mkdtemp(prefix="scaivault-pg-"))
        self._give_to_server_user(self.directory)
        self._initdb(timeout)
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-k", str(self.directory)]
        for name, value in SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        self.child = ChildProcess(
            f"postgres:{self.port}", self._as_server_user(argv), self.log_path
        )
        self.child.start()
        self.child.wait_log(READY, timeout=timeout)  # listening comes before ready
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: sessions are ended), SIGKILL if it lingers; remove the dir."""
        if self.child is not None and self.child.proc is not None:
            self.child.signal_group(signal.SIGINT)
            try:
                self.child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.child.kill()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.proc.pid, signal.SIGKILL)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _initdb(self, timeout: float) -> None:
        pwfile = self._dir() / "pwfile"
        pwfile.write_text(self.superuser.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._give_to_server_user(pwfile)
        argv = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser.username,
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                self._as_server_user(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise StackError(f"initdb failed (exit {done.returncode}):\n{tail}")

    # --- running as the server's user ------------------------------------------------------

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """The ``postgres`` system user when we are root (initdb and postgres refuse root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise StackError(
                "running as root, and there is no 'postgres' system user to run the server as "
                "(PostgreSQL refuses to run as root): install the postgresql package, or run as "
                "another user"
            ) from None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        user = self._server_user()
        if user is None:
            return argv
        runuser = shutil.which("runuser")
        if runuser is None:
            raise StackError("running as root needs runuser (util-linux) to start PostgreSQL")
        return [runuser, "-u", user.pw_name, "--", *argv]

    def _give_to_server_user(self, path: Path) -> None:
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
