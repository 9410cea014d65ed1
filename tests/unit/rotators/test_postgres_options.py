"""The PostgreSQL rotators' options as the routing file gives them, and how a failed connection's
libpq message becomes our error (classified, never passed on)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from orchestrator.routing import RoutingTable
from rotators import PermanentError, TransientError
from rotators.postgres.options import PostgresDualOptions, PostgresPasswordOptions
from rotators.postgres.session import (
    Login,
    LoginRefused,
    condition_name,
    connect_error,
    using,
)
from rotators.secret import Secret

DUAL = {"host": "db.internal", "users": ["app_a", "app_b"], "admin_secret_path": "db/admin"}


def test_defaults_are_what_an_operator_expects() -> None:
    options = PostgresPasswordOptions(host="db.internal")
    assert (options.port, options.dbname, options.sslmode) == (5432, "postgres", "prefer")
    assert (options.username_field, options.password_field) == ("username", "password")
    assert options.admin_secret_path is None
    assert options.password.length == 32 and options.password.symbols_set == "-_.~"
    assert options.where() == "db.internal:5432/postgres"


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"host": "postgres://u:p@db/x"}, "not a URL"),
        ({"host": "/var/run/postgresql"}, "not a URL"),
        ({"sslmode": "verify-full"}, "needs sslrootcert"),
        ({"sslmode": "sometimes"}, "sslmode"),
        ({"port": 0}, "port"),
        ({"connect_timeout": 1}, "connect_timeout"),
        ({"password_field": "username"}, "must be different"),
        ({"password": {"length": 8}}, "length"),
        ({"users": ["app_a", "app_a"]}, "two different roles"),
        ({"users": ["app_a"]}, "users"),
        ({"users": ["app_a", "x" * 64]}, "1-63 bytes"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_options_are_refused_with_the_field_named(
    changes: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        PostgresDualOptions.model_validate({**DUAL, **changes})


def test_dual_needs_an_admin_and_the_password_policy_is_a_table() -> None:
    with pytest.raises(ValidationError, match="admin_secret_path"):
        PostgresDualOptions.model_validate({"host": "db", "users": ["a", "b"]})
    text = (
        '[[rules]]\nmatch = "apps/**"\nrotator = "postgres-dual"\n[rules.options]\n'
        'host = "db.internal"\nusers = ["app_a", "app_b"]\nadmin_secret_path = "db/admin"\n'
        "[rules.options.password]\nlength = 40\nsymbols = false\n"
    )
    rule = RoutingTable.parse(text).match("apps/orders/db")
    assert rule is not None
    assert isinstance(rule.options, PostgresDualOptions)
    assert rule.options.users == ("app_a", "app_b")
    assert rule.options.password.length == 40 and not rule.options.password.symbols


LOGIN = Login("app_a", Secret("hunter2-password"))
PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '


@pytest.mark.parametrize(
    ("message", "kind", "says"),
    [
        ('FATAL:  password authentication failed for user "app_a"', LoginRefused, "refuses"),
        ('FATAL:  role "app_a" is not permitted to log in', LoginRefused, "ALTER ROLE app_a LOGIN"),
        ("FATAL:  permission denied for database", PermanentError, "GRANT CONNECT ON DATABASE"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app_a"', PermanentError, "hba"),
        ('FATAL:  database "orders" does not exist', PermanentError, "does not exist"),
        ('FATAL:  role "app_a" does not exist', PermanentError, "does not exist"),
        ('FATAL:  too many connections for role "app_a"', TransientError, "too many"),
        ("FATAL:  sorry, too many clients already", TransientError, "cannot connect"),
        ("FATAL:  remaining connection slots are reserved for", TransientError, "too many"),
        ("server does not support SSL, but SSL was required", PermanentError, "TLS failed"),
        ("SSL error: certificate verify failed", PermanentError, "TLS failed"),
        ("SSL SYSCALL error: EOF detected", TransientError, "cannot connect"),
        ("Connection refused\n\tIs the server running", TransientError, "connection refused"),
        ("timeout expired", TransientError, "timed out"),
        ("FATAL:  the database system is starting up", TransientError, "starting up"),
        ("FATAL:  la autentificación falló para el usuario", TransientError, "cannot connect"),
    ],
)
def test_connection_failures_are_classified_without_their_text(
    message: str, kind: type[Exception], says: str
) -> None:
    options = PostgresPasswordOptions(host="127.0.0.1")
    error = connect_error(PREFIX + message, options, LOGIN, "role app_a")
    assert type(error) is kind
    assert says in str(error) or says in str(error).lower()
    assert message not in str(error) and "hunter2" not in str(error)
    assert "127.0.0.1:5432/postgres" in str(error)


def test_sqlstates_are_named() -> None:
    assert condition_name("42501") == "insufficient_privilege"
    assert condition_name("53300") == "too_many_connections"
    assert condition_name("ZZ999") == "ZZ999"


def test_sslrootcert_must_be_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"sslrootcert .* is not a file"):
        PostgresDualOptions.model_validate(
            {**DUAL, "sslmode": "verify-full", "sslrootcert": str(tmp_path / "missing-ca.pem")}
        )
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    options = PostgresDualOptions.model_validate(
        {**DUAL, "sslmode": "verify-full", "sslrootcert": str(ca)}
    )
    assert options.sslrootcert == str(ca)


class _Closing:
    """Stands in for a connection: :func:`using` only closes it."""

    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_driver_error_leaving_a_session_keeps_nothing_of_the_driver() -> None:
    conn = _Closing()
    secret = "hunter2-in-the-drivers-text"
    with (
        pytest.raises(TransientError, match="connection to PostgreSQL was lost") as err,
        using(conn, "admin on db"),  # type: ignore[arg-type]
    ):
        raise psycopg.OperationalError(f"password={secret}")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    chained = err.value.__context__
    if chained is not None:
        assert isinstance(chained, psycopg.Error)
        assert chained.args == () and chained.pgconn is None and chained.__traceback__ is None
        assert secret not in repr(chained) and secret not in str(chained)
    assert conn.closed
