"""The database rotators' pure parts: hashes, logins, options, and errors translated without
the server's text."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
from pydantic import ValidationError

from rotators import PermanentError, TransientError
from rotators.login import admin_login, login_of, with_login
from rotators.mysql import MysqlDualRotator, MysqlPasswordRotator
from rotators.mysql.options import MysqlDualOptions
from rotators.mysql.server import LoginRefused, _translate, native_hash
from rotators.redis_acl import RedisAclRotator, _sample, password_hash
from rotators.redis_acl import _translate as redis_translate
from rotators.testing import MemoryVault, make_context


def test_native_hash_is_mysqls_password_function() -> None:
    # SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
    assert native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_redis_password_hash_is_the_sha256_acl_keeps() -> None:
    assert password_hash("pw") == hashlib.sha256(b"pw").hexdigest()


def test_a_login_names_the_missing_field_and_keeps_other_fields() -> None:
    fields = MysqlDualOptions(host="db", users=("a", "b"), admin_secret_path="adm")
    with pytest.raises(PermanentError, match="'password'"):
        login_of({"username": "a"}, "current", fields)
    data = with_login({"username": "a", "password": "x", "port": 1}, fields, "b", "y")
    assert data == {"username": "b", "password": "y", "port": 1}
    login = login_of(data, "new", fields)
    assert login.username == "b" and "y" not in repr(login)


def ctx(options: dict[str, Any], admin: dict[str, str], path: str = "db/app") -> Any:
    vault = MemoryVault()
    vault.put("db/admin", admin)
    vault.put(path, {"username": "a", "password": "x"})
    return make_context(MysqlDualRotator, vault, path, options)


def test_admin_login_refuses_the_rotated_secret_and_accounts() -> None:
    options = {"host": "db", "users": ["a", "b"], "admin_secret_path": "db/admin"}
    assert admin_login(ctx(options, {"username": "root", "password": "r"}), "db/admin").username
    with pytest.raises(PermanentError, match="separate admin account"):
        admin_login(ctx(options, {"username": "b", "password": "r"}), "db/admin", "a", "b")
    with pytest.raises(PermanentError, match="self-rotation"):
        admin_login(ctx(options, {"username": "r", "password": "r"}, "db/admin"), "db/admin")


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"host": "db", "username": "app", "ca_file": __file__}, "tls = true"),  # a real file
        ({"host": "db", "username": "app", "port": 0}, "greater than or equal to 1"),
        ({"host": "db"}, "username"),
        ({"host": "db", "username": "app", "extra": 1}, "Extra inputs"),
    ],
)
def test_mysql_password_options(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MysqlPasswordRotator.Options.model_validate(options)


def test_mysql_dual_options_need_two_users_and_an_admin() -> None:
    with pytest.raises(ValidationError, match="two different"):
        MysqlDualRotator.Options.model_validate(
            {"host": "db", "users": ["a", "a"], "admin_secret_path": "x"}
        )
    with pytest.raises(ValidationError, match="admin_secret_path"):
        MysqlDualRotator.Options.model_validate({"host": "db", "users": ["a", "b"]})


def test_redis_acl_options_take_exactly_one_mode() -> None:
    base = {"host": "r", "admin_secret_path": "adm"}
    for options in (base, {**base, "username": "u", "users": ["a", "b"]}):
        with pytest.raises(ValidationError, match="exactly one of username"):
            RedisAclRotator.Options.model_validate(options)
    assert RedisAclRotator.Options.model_validate({**base, "users": ["a", "b"]}).rotated == (
        "a",
        "b",
    )


def test_mysql_errors_become_ours_by_code_without_the_servers_text() -> None:
    leak = "IDENTIFIED ... AS '*SECRETHASH'"
    cases = [
        (pymysql.err.OperationalError(1045, leak), LoginRefused, "refused the login"),
        (pymysql.err.OperationalError(1227, leak), PermanentError, "CREATE USER privilege"),
        (pymysql.err.OperationalError(1396, leak), PermanentError, "no such account"),
        (pymysql.err.OperationalError(2003, leak), TransientError, "unreachable"),
        (pymysql.err.ProgrammingError(1064, leak), PermanentError, "error 1064"),
    ]
    for exc, kind, text in cases:
        error = _translate(exc, "changing", "CREATE USER")
        assert isinstance(error, kind) and text in str(error)
        assert "SECRETHASH" not in str(error)


def test_redis_errors_become_ours_without_their_text() -> None:
    leak = "Error in ACL SETUSER modifier '#secrethash'"
    denied = redis_translate(redis.exceptions.NoPermissionError(leak), "client|list")
    assert isinstance(denied, PermanentError) and "+client|list" in str(denied)
    down = redis_translate(redis.ConnectionError(leak), "acl|setuser")
    assert isinstance(down, TransientError)
    other = redis_translate(redis.ResponseError(leak), "acl|setuser")
    assert isinstance(other, PermanentError) and "secrethash" not in str(other)


def test_dryrun_samples_name_the_command_of_a_grant() -> None:
    assert _sample("acl|setuser") == ["ACL", "SETUSER", "scaivault-rotator-dryrun"]
    assert _sample("client|list") == ["CLIENT", "LIST"]


def test_without_the_mysql_extra_the_rotators_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rotators.mysql import server

    monkeypatch.setattr(server, "pymysql", None)
    options = MysqlDualOptions(host="db", users=("a", "b"), admin_secret_path="adm")
    with pytest.raises(PermanentError, match=r"scaivault-rotator\[mysql\]"):
        server.MysqlServer(options)


class _PluginCursor:
    """A cursor whose server answers ``status`` for the mysql_native_password plugin."""

    def __init__(self, status: str | None) -> None:
        self.status = status

    def execute(self, query: str, args: tuple[Any, ...]) -> None:
        assert "information_schema.PLUGINS" in query and args == ("mysql_native_password",)

    def fetchone(self) -> tuple[str] | None:
        return None if self.status is None else (self.status,)


@pytest.mark.parametrize("status", [None, "DISABLED"], ids=["removed (MySQL 9)", "off (8.4)"])
def test_a_server_without_mysql_native_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, status: str | None
) -> None:
    from rotators.mysql import server

    @contextmanager
    def session(self: Any, login: Any, doing: str, grant: str = "") -> Iterator[Any]:
        yield _PluginCursor(status)

    monkeypatch.setattr(server.MysqlServer, "session", session)
    options = MysqlDualOptions(host="db", users=("a", "b"), admin_secret_path="adm")
    login = login_of({"username": "adm", "password": "x" * 16}, "admin", options)
    mysql = server.MysqlServer(options)
    with pytest.raises(PermanentError, match="mysql_native_password=ON"):
        mysql.require_native_password(login)
    status = "ACTIVE"
    mysql.require_native_password(login)


@pytest.mark.parametrize(
    ("rotator", "options"),
    [
        (MysqlDualRotator, {"host": "db", "users": ["a", "b"], "admin_secret_path": "adm"}),
        (RedisAclRotator, {"host": "cache", "username": "app", "admin_secret_path": "adm"}),
    ],
    ids=["mysql", "redis-acl"],
)
def test_a_ca_file_must_exist_when_the_rule_loads(
    rotator: Any, options: dict[str, Any], tmp_path: Path
) -> None:
    missing = {**options, "tls": True, "ca_file": str(tmp_path / "missing-ca.pem")}
    with pytest.raises(ValidationError, match=r"ca_file .* is not a file"):
        rotator.Options.model_validate(missing)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    rotator.Options.model_validate({**missing, "ca_file": str(ca)})
