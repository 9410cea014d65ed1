"""The statements the PostgreSQL rotators run: set a role's password, read what a rotation needs
to know about roles and grants, see who is connected as a role, end those sessions.

A password is never sent: :func:`set_password` computes its SCRAM-SHA-256 verifier on this side
(libpq's ``PQencryptPasswordConn``, what ``psql``'s ``\\password`` does) and sends that, so the
plaintext is in no statement, server log or ``pg_stat_activity``. Role names are always quoted
by the driver (``psycopg.sql.Identifier``) or passed as parameters, never formatted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from rotators.contract import Usage
from rotators.errors import PermanentError
from rotators.postgres.session import Connection, run, translate
from rotators.secret import Secret

#: The only password hash the rotators send.
ALGORITHM = b"scram-sha-256"
#: PostgreSQL 16 made CREATEROLE need ADMIN OPTION on the roles it manages.
ADMIN_OPTION_SINCE = 160000


def grant_hint(admin: str, role: str, version: int) -> str:
    """What to grant so that ``admin`` may set ``role``'s password."""
    hint = f"ALTER ROLE {admin} CREATEROLE"
    if version >= ADMIN_OPTION_SINCE:
        hint += f", and GRANT {role} TO {admin} WITH ADMIN OPTION (PostgreSQL 16+)"
    return hint + "; a superuser role's password only a superuser can set"


def set_password(conn: Connection, role: str, password: Secret, *, denied: str = "") -> None:
    """Give ``role`` ``password`` (as a SCRAM-SHA-256 verifier computed here)."""
    verifier = _verifier(conn, role, password)
    statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(verifier.decode("ascii"))
    )
    run(
        conn,
        statement,
        what=f"setting the password of role {role!r}",
        denied=denied or "the connected role may not change it",
        missing=f"role {role!r} does not exist",
    )


def _verifier(conn: Connection, role: str, password: Secret) -> bytes:
    """libpq's SCRAM-SHA-256 verifier of ``password`` for ``role``, its errors translated here
    (a plain function, so the driver's exception is not the context of ours)."""
    try:
        return conn.pgconn.encrypt_password(
            password.reveal().encode("utf-8"), role.encode("utf-8"), ALGORITHM
        )
    except psycopg.Error as exc:
        error = translate(exc, f"computing the password verifier of role {role!r}")
    raise error


@dataclass(frozen=True)
class Role:
    """What the catalog says about one role."""

    name: str
    exists: bool
    can_login: bool = False
    superuser: bool = False


def role(conn: Connection, name: str) -> Role:
    """``name``'s facts from ``pg_roles`` (``exists`` False when there is no such role)."""
    rows = run(
        conn,
        "SELECT rolcanlogin, rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s",
        (name,),
        what=f"reading role {name!r}",
    )
    if not rows:
        return Role(name, exists=False)
    can_login, superuser = rows[0]
    return Role(name, exists=True, can_login=bool(can_login), superuser=bool(superuser))


@dataclass(frozen=True)
class Admin:
    """The connected (admin) role and what it may do."""

    name: str
    superuser: bool
    createrole: bool
    version: int
    reads_all_stats: bool
    signals_backends: bool


def admin(conn: Connection) -> Admin:
    """Facts about the connected role: its attributes, the server version, monitoring grants."""
    rows = run(
        conn,
        "SELECT current_user, r.rolsuper, r.rolcreaterole, "
        "current_setting('server_version_num')::int, "
        "pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), "
        "pg_has_role(current_user, 'pg_signal_backend', 'USAGE') "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        what="reading the admin role",
    )
    name, superuser, createrole, version, stats, signal = rows[0]
    return Admin(str(name), bool(superuser), bool(createrole), int(version), stats, signal)


def may_set_password(conn: Connection, who: Admin, target: Role) -> str | None:
    """Why ``who`` may not set ``target``'s password (what to grant), or None when it may."""
    if who.superuser:
        return None
    if target.superuser:
        return f"role {target.name!r} is a superuser: only a superuser can set its password"
    if not who.createrole:
        return (
            f"role {who.name!r} lacks CREATEROLE: {grant_hint(who.name, target.name, who.version)}"
        )
    if who.version >= ADMIN_OPTION_SINCE:
        rows = run(
            conn,
            "SELECT pg_has_role(current_user, %s, 'MEMBER WITH ADMIN OPTION')",
            (target.name,),
            what=f"reading the admin's grants on role {target.name!r}",
        )
        if not rows[0][0]:
            return (
                f"role {who.name!r} lacks ADMIN OPTION on {target.name!r}: "
                f"GRANT {target.name} TO {who.name} WITH ADMIN OPTION"
            )
    return None


def require_login_role(conn: Connection, who: Admin, name: str) -> Role:
    """``name``'s facts; :class:`PermanentError` unless it exists, may log in and ``who`` may
    set its password (the message says what to create or grant)."""
    found = role(conn, name)
    if not found.exists:
        raise PermanentError(f"role {name!r} does not exist: create it (CREATE ROLE ... LOGIN)")
    if not found.can_login:
        raise PermanentError(f"role {name!r} may not log in: ALTER ROLE {name} LOGIN")
    problem = may_set_password(conn, who, found)
    if problem:
        raise PermanentError(f"the admin cannot set role {name!r}'s password: {problem}")
    return found


def usage(conn: Connection, name: str) -> Usage:
    """Who is connected as ``name`` now (client backends in ``pg_stat_activity``, every database).

    Without ``pg_read_all_stats`` (or ``pg_monitor``) the connected role still sees how many
    sessions there are and their application names, but not their addresses or start times
    (and ``backend_type`` is NULL in those rows, so NULL counts as a client session).
    """
    rows = run(
        conn,
        "SELECT count(*)::int, "
        "array_remove(array_agg(DISTINCT CASE WHEN client_port = -1 THEN 'local' "
        "ELSE host(client_addr) END), NULL), "
        "array_remove(array_agg(DISTINCT nullif(application_name, '')), NULL), "
        "min(backend_start) "
        "FROM pg_catalog.pg_stat_activity "
        "WHERE usename = %s AND pid <> pg_backend_pid() "
        "AND coalesce(backend_type, 'client backend') = 'client backend'",
        (name,),
        what=f"reading the sessions of role {name!r}",
    )
    count, clients, applications, oldest = rows[0]
    return Usage(
        sessions=int(count),
        who=name,
        clients=tuple(sorted(str(c) for c in clients or ())),
        applications=tuple(sorted(str(a) for a in applications or ())),
        oldest=oldest if isinstance(oldest, datetime) else None,
    )


def terminate(conn: Connection, name: str) -> int:
    """End every session of ``name`` (``pg_terminate_backend``); how many were ended."""
    rows = run(
        conn,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int "
        "FROM pg_catalog.pg_stat_activity "
        "WHERE usename = %s AND pid <> pg_backend_pid() "
        "AND coalesce(backend_type, 'client backend') = 'client backend'",
        (name,),
        what=f"ending the sessions of role {name!r}",
        denied="grant the admin pg_signal_backend (GRANT pg_signal_backend TO admin)",
    )
    return int(rows[0][0])
