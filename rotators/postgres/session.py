"""Connections to a PostgreSQL server, and the one place psycopg's errors become ours.

Every connection is new (no pool: a rotation runs a handful of statements, and ``verify`` must
prove the credential by logging in), autocommit, named ``scaivault-rotator`` in
``pg_stat_activity``, with the routing file's TLS settings and timeouts.

Errors, translated without their text::

    psycopg.Error
     +-- at connect (libpq gives text only, so it is classified, never passed on)
     |    password authentication failed,
     |    role not permitted to log in         -> LoginRefused (a PermanentError)
     |    no pg_hba.conf entry, no database,
     |    no CONNECT on it, TLS / certificate  -> PermanentError
     |    refused, timeout, too many
     |    connections, starting up, other      -> TransientError
     +-- after connect, by SQLSTATE class or code
          08, 40, 53, 57 (57014: statement
          timeout), 55P03, 55006               -> TransientError
          anything else                        -> PermanentError naming SQLSTATE and condition

A driver exception can hold the password itself (``exc.pgconn`` keeps the connection
parameters), so it is dropped: the error we raise is built from facts, raised outside the
``except`` block so it has no ``__context__``, and never carries the driver's text. Where
Python keeps it as context anyway (an error leaving a ``with`` block, :func:`using`), it is
emptied first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:
    import psycopg
    import psycopg.errors
    from psycopg import sql
except ModuleNotFoundError as exc:  # the optional extra is not installed
    raise ModuleNotFoundError(
        "the PostgreSQL rotators need psycopg 3: pip install 'scaivault-rotator[postgres]'"
    ) from exc

from rotators.errors import PermanentError, RotatorError, TransientError
from rotators.postgres.options import ServerOptions
from rotators.secret import Secret

#: ``application_name`` of the rotators' own connections (seen in ``pg_stat_activity``).
APPLICATION_NAME = "scaivault-rotator"
#: SQLSTATE classes and codes a retry may get past.
TRANSIENT_CLASSES = ("08", "40", "53", "57")
TRANSIENT_CODES = frozenset({"55P03", "55006"})

Connection = psycopg.Connection[tuple[Any, ...]]
Query = str | sql.SQL | sql.Composed


@dataclass(frozen=True)
class Login:
    """A role and its password (the password's ``repr`` is redacted)."""

    role: str
    password: Secret


class LoginRefused(PermanentError):
    """The server refused a role's password: wrong, revoked, or the role does not exist (the
    server does not say which, on purpose). Callers that test a credential catch it."""


@contextmanager
def session(options: ServerOptions, login: Login, what: str) -> Iterator[Connection]:
    """A connection as ``login``, closed after the block; run statements with :func:`run`.

    ``what`` names the connection in messages (``"admin"``, ``"role app_a"``). A driver error
    that escapes the block anyway is translated, with its context suppressed.
    """
    with using(connect(options, login, what), f"{what} on {options.where()}") as conn:
        yield conn


@contextmanager
def using(conn: Connection, what: str) -> Iterator[Connection]:
    """``conn`` for the block, closed after it; a driver error escaping it is translated.

    Python makes an exception raised while a ``with`` block's exception unwinds (here) keep
    that exception as ``__context__`` wherever it is raised, so the driver's exception is
    emptied first: no text, no connection (which holds the password), no frames.
    """
    try:
        yield conn
    except psycopg.Error as exc:
        error = translate(exc, what)
        scrub(exc)
        raise error from None
    finally:
        conn.close()


def scrub(exc: psycopg.Error) -> None:
    """Empty a driver exception that stays reachable: its text, connection and frames."""
    exc.args = ()
    exc._pgconn = None
    exc._info = None
    exc.__traceback__ = None


def run(
    conn: Connection,
    query: Query,
    params: tuple[Any, ...] = (),
    *,
    what: str,
    denied: str = "",
    missing: str = "",
) -> list[tuple[Any, ...]]:
    """Execute ``query`` and return its rows (none for a statement without a result).

    ``denied`` and ``missing`` replace the message of a ``42501 insufficient_privilege`` or a
    ``42704 undefined_object`` error: say what to grant or what does not exist.
    """
    try:
        cursor = conn.execute(query, params or None)
        rows = cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as exc:
        error = translate(exc, what)
        if exc.sqlstate == "42501" and denied:
            error = PermanentError(f"{what}: permission denied: {denied}")
        elif exc.sqlstate == "42704" and missing:
            error = PermanentError(f"{what}: {missing}")
    else:
        return rows
    raise error


def connect(options: ServerOptions, login: Login, what: str) -> Connection:
    """Open a connection as ``login`` (raises our errors only)."""
    ms = options.statement_timeout * 1000
    params: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "dbname": options.dbname,
        "user": login.role,
        "password": login.password.reveal(),
        "sslmode": options.sslmode,
        "connect_timeout": options.connect_timeout,
        "application_name": APPLICATION_NAME,
        "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        "autocommit": True,
    }
    if options.sslrootcert:
        params["sslrootcert"] = options.sslrootcert
    try:
        return psycopg.connect(**params)
    except psycopg.Error as exc:
        error = connect_error(str(exc), options, login, what)
    raise error


def accepts(options: ServerOptions, login: Login) -> bool:
    """Whether the server lets ``login`` in now (False when it refuses the password)."""
    try:
        login_check(options, login)
    except LoginRefused:
        return False
    return True


def login_check(options: ServerOptions, login: Login) -> None:
    """Log in as ``login`` and run a query; raises :class:`LoginRefused` when refused."""
    what = f"role {login.role}"
    with session(options, login, what) as conn:
        run(conn, "SELECT 1", what=what)


def connect_error(text: str, options: ServerOptions, login: Login, what: str) -> RotatorError:
    """Our error for a failed connection, from libpq's message (which is never passed on)."""
    where = options.where()
    lower = text.lower()
    if "password authentication failed" in lower or "authentication failed" in lower:
        return LoginRefused(f"{where} refuses the password of role {login.role!r} ({what})")
    if "not permitted to log in" in lower:
        return LoginRefused(
            f"{where}: role {login.role!r} may not log in (NOLOGIN): ALTER ROLE {login.role} LOGIN"
        )
    if "permission denied for database" in lower:
        return PermanentError(
            f"{where}: role {login.role!r} may not connect to database {options.dbname!r}: "
            f"GRANT CONNECT ON DATABASE {options.dbname} TO {login.role}"
        )
    if "no pg_hba.conf entry" in lower:
        return PermanentError(
            f"{where}: pg_hba.conf has no entry letting role {login.role!r} connect from this "
            "host (ask the server's administrator to allow it)"
        )
    if "database" in lower and "does not exist" in lower:
        return PermanentError(f"{where}: database {options.dbname!r} does not exist (fix dbname)")
    if "role" in lower and "does not exist" in lower:
        return PermanentError(f"{where}: role {login.role!r} does not exist")
    if "too many connections" in lower or "connection slots are reserved" in lower:
        return TransientError(f"{where}: too many connections ({what}); retrying later")
    if _tls_problem(lower):
        return PermanentError(
            f"{where}: TLS failed with sslmode {options.sslmode} ({what}); check sslmode, "
            "sslrootcert and the server's certificate"
        )
    return TransientError(f"{where}: cannot connect ({_reach_reason(lower)}, {what})")


def _tls_problem(lower: str) -> bool:
    if "ssl syscall" in lower or "ssl connection has been closed" in lower:
        return False  # the network dropped a TLS connection: worth a retry
    return "ssl" in lower or "certificate" in lower


def _reach_reason(lower: str) -> str:
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("timeout", "timed out"),
        ("could not translate host name", "host name not found"),
        ("starting up", "the server is starting up"),
        ("shutting down", "the server is shutting down"),
        ("recovery", "the server is in recovery"),
        ("closed the connection", "the server closed the connection"),
        ("unreachable", "network unreachable"),
        ("no route", "no route to host"),
    ):
        if needle in lower:
            return reason
    return "connection failed"


def translate(exc: psycopg.Error, what: str) -> RotatorError:
    """Our error for a failed statement: its SQLSTATE and condition name, never its text."""
    code = exc.sqlstate
    if code is None:  # no server answer: the connection broke
        return TransientError(f"{what}: the connection to PostgreSQL was lost")
    condition = condition_name(code)
    if code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_CODES:
        return TransientError(f"{what}: {condition} (SQLSTATE {code}); retrying later")
    if code == "42501":
        return PermanentError(f"{what}: permission denied (SQLSTATE 42501)")
    return PermanentError(f"{what}: PostgreSQL refused: {condition} (SQLSTATE {code})")


def condition_name(code: str) -> str:
    """``insufficient_privilege`` for ``42501`` (the SQLSTATE itself when unknown)."""
    try:
        cls = psycopg.errors.lookup(code)
    except KeyError:
        return code
    name = cls.__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
