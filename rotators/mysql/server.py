"""One MySQL/MariaDB server as the rotators see it: logins, password changes, sessions, grants.

Passwords are never sent: :func:`native_hash` computes the ``mysql_native_password`` hash on
this side and ``ALTER USER %s@%s IDENTIFIED WITH mysql_native_password AS %s`` carries it as a
driver parameter (PyMySQL escapes it; nothing is formatted into SQL by hand), so the server's
general and slow query logs hold the hash at most. A login sends the password through the
authentication handshake, which no log records.

Driver errors are translated here, by error code only: a server message may quote the
statement, and so a hash.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rotators.contract import Usage
from rotators.errors import PermanentError, RotatorError, TransientError
from rotators.login import Login
from rotators.mysql.options import MysqlOptions

try:
    import pymysql
except ImportError:  # the optional extra is not installed
    pymysql = None  # type: ignore[assignment]

#: Error codes: login refused; privilege, database or table access refused; no such account.
ACCESS_DENIED = 1045
NEEDS_PRIVILEGE = 1227
DENIED_ON_OBJECT = (1044, 1142, 1143)
NO_SUCH_ACCOUNT = 1396
HOST_NOT_ALLOWED = 1130
#: Connection-level trouble worth a retry: can't connect, gone away, lost, too many, shutdown.
UNREACHABLE = (2002, 2003, 2005, 2006, 2013, 1040, 1053, 1205, 1213)

_CHANGE = "ALTER USER %s@%s IDENTIFIED WITH mysql_native_password AS %s"
_CHANGE_OWN = "SET PASSWORD = %s"
_SESSIONS = "SELECT HOST FROM information_schema.PROCESSLIST WHERE USER = %s"
_PRIVILEGES = "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s"
_NATIVE_PLUGIN = "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = %s"


def native_hash(password: str) -> str:
    """The ``mysql_native_password`` hash of ``password``: ``*`` + hex(SHA1(SHA1(password)))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the protocol's own hash
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


@dataclass(frozen=True)
class Account:
    """A ``'user'@'host'`` account."""

    user: str
    host: str

    def __str__(self) -> str:
        return f"'{self.user}'@'{self.host}'"


class MysqlServer:
    """The server of one rule's options; every call opens (and closes) its own connection."""

    def __init__(self, options: MysqlOptions) -> None:
        if pymysql is None:
            raise PermanentError(
                "the MySQL rotators need PyMySQL: pip install 'scaivault-rotator[mysql]'"
            )
        self.options = options

    @contextmanager
    def session(self, login: Login, doing: str, grant: str = "") -> Iterator[Any]:
        """A connection authenticated as ``login``; errors are translated, saying what failed
        and (``grant``) which global privilege the statements need."""
        try:
            conn = pymysql.connect(**self._connect_args(login))
        except pymysql.Error as exc:
            # PyMySQL wraps socket and TLS errors, keeping the original beside the wrapper.
            if isinstance(getattr(exc, "original_exception", None), ssl.SSLCertVerificationError):
                raise PermanentError(
                    f"{doing}: the server's TLS certificate is not trusted or does not name "
                    "host (check ca_file and verify_identity)"
                ) from None
            raise _translate(exc, f"{doing} (as {login.username!r})") from None
        try:
            with conn.cursor() as cursor:
                yield cursor
        except pymysql.Error as exc:
            raise _translate(exc, doing, grant) from None
        finally:
            conn.close()

    def accepts(self, login: Login) -> bool:
        """True when ``login`` logs in; False when the server refuses it."""
        try:
            with self.session(login, "checking a login"):
                return True
        except LoginRefused:
            return False

    def change_password(self, admin: Login, account: Account, password: str) -> None:
        """Set ``account``'s password (as its hash), authenticated as ``admin``."""
        doing = f"changing the password of {account}"
        with self.session(admin, doing, grant="CREATE USER") as cursor:
            cursor.execute(_CHANGE, (account.user, account.host, native_hash(password)))

    def change_own_password(self, login: Login, password: str) -> None:
        """``login`` sets its own password (as its hash): MariaDB only, where
        ``SET PASSWORD = '<hash>'`` takes a hash (MySQL 8 would take it as the password)."""
        with self.session(login, "changing its own password") as cursor:
            if not self._is_mariadb(cursor):
                raise PermanentError(
                    "a MySQL account cannot set its own password from a hash: set "
                    "admin_secret_path to an admin with CREATE USER"
                )
            cursor.execute(_CHANGE_OWN, (native_hash(password),))

    def usage(self, admin: Login, user: str) -> Usage:
        """The sessions open as ``user`` (any host), from the process list."""
        with self.session(admin, "reading the process list") as cursor:
            missing = self._missing(cursor, ("PROCESS",))
            if missing:
                raise PermanentError(_grant_text(admin, missing, "see other accounts' sessions"))
            cursor.execute(_SESSIONS, (user,))
            hosts = tuple(str(row[0]).rsplit(":", 1)[0] for row in cursor.fetchall())
        return Usage(sessions=len(hosts), who=user, clients=hosts)

    def missing_privileges(self, admin: Login, needed: tuple[str, ...]) -> list[str]:
        """The global privileges of ``needed`` that ``admin`` lacks."""
        with self.session(admin, "reading the admin's privileges") as cursor:
            return self._missing(cursor, needed)

    def require_native_password(self, login: Login) -> None:
        """:class:`PermanentError` unless the server has ``mysql_native_password`` active, the
        plugin every rotated account is switched to (MariaDB always has it; MySQL 8.4 turns it
        off by default and MySQL 9 removed it)."""
        with self.session(login, "reading the server's authentication plugins") as cursor:
            cursor.execute(_NATIVE_PLUGIN, ("mysql_native_password",))
            row = cursor.fetchone()
        if row is None or str(row[0]).upper() != "ACTIVE":
            raise PermanentError(
                "the server has no active mysql_native_password plugin, which these rotators "
                "set the accounts to: on MySQL 8.4 start the server with "
                "mysql_native_password=ON; MySQL 9 has none (use MariaDB or MySQL 8.0-8.4)"
            )

    def is_mariadb(self, login: Login) -> bool:
        """Whether the server is MariaDB (``VERSION()`` says so), asked as ``login``."""
        with self.session(login, "reading the server version") as cursor:
            return self._is_mariadb(cursor)

    # --- helpers ---------------------------------------------------------------------------

    def _connect_args(self, login: Login) -> dict[str, Any]:
        options = self.options
        args: dict[str, Any] = {
            "host": options.host,
            "port": options.port,
            "user": login.username,
            "password": login.password.reveal(),
            "connect_timeout": options.connect_timeout,
            "read_timeout": options.read_timeout,
            "write_timeout": options.read_timeout,
            "autocommit": True,
            "program_name": "scaivault-rotator",
        }
        if options.tls:
            args["ssl"] = _tls_context(options)
        return args

    @staticmethod
    def _is_mariadb(cursor: Any) -> bool:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
        return row is not None and "mariadb" in str(row[0]).lower()

    @staticmethod
    def _missing(cursor: Any, needed: tuple[str, ...]) -> list[str]:
        cursor.execute("SELECT CURRENT_USER()")
        row = cursor.fetchone()
        user, _, host = str(row[0] if row else "").rpartition("@")
        grantee = "'{}'@'{}'".format(user.replace("'", "''"), host.replace("'", "''"))
        cursor.execute(_PRIVILEGES, (grantee,))
        held = {str(r[0]).upper() for r in cursor.fetchall()}
        return [p for p in needed if p not in held]


def _tls_context(options: MysqlOptions) -> ssl.SSLContext:
    """The server's certificate must chain to ``ca_file`` (or the system's CAs) and, with
    ``verify_identity``, name ``host``."""
    context = ssl.create_default_context(cafile=options.ca_file)
    context.check_hostname = options.verify_identity
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class LoginRefused(PermanentError):
    """The server refused a login (wrong password, or no such account from this host)."""


def _grant_text(admin: Login, missing: list[str], why: str) -> str:
    grants = ", ".join(missing)
    return (
        f"the admin account {admin.username!r} lacks the global {grants} privilege needed to "
        f"{why}: GRANT {grants} ON *.* TO the admin account"
    )


def _translate(exc: Exception, doing: str, grant: str = "") -> RotatorError:
    """Our error for a driver error, by its code only (server texts may quote a hash)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in (ACCESS_DENIED, HOST_NOT_ALLOWED):
        return LoginRefused(f"{doing}: the server refused the login (error {code})")
    if code == NEEDS_PRIVILEGE:
        needed = grant or "a global"
        return PermanentError(
            f"{doing}: the account lacks the {needed} privilege (error 1227): "
            f"GRANT {grant or '...'} ON *.* TO it"
        )
    if code in DENIED_ON_OBJECT:
        return PermanentError(f"{doing}: access to a database or table refused (error {code})")
    if code == NO_SUCH_ACCOUNT:
        return PermanentError(f"{doing}: no such account (error 1396): create it first")
    if code in UNREACHABLE or code is None or isinstance(exc, pymysql.OperationalError):
        return TransientError(f"{doing}: the server is unreachable or busy (error {code})")
    return PermanentError(f"{doing}: the server answered error {code}")
