"""Routing-file options of ``mysql-password`` and ``mysql-dual``."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from rotators.login import LoginFields, existing_file


class MysqlOptions(LoginFields):
    """Where the server is and how to reach it; shared by both MySQL/MariaDB rotators."""

    host: str = Field(min_length=1, description="The server's host name or address")
    port: int = Field(default=3306, ge=1, le=65535)
    account_host: str = Field(
        default="%", min_length=1, description="The host part of the 'user'@'host' accounts"
    )
    tls: bool = Field(default=False, description="Connect over TLS (required with ca_file)")
    ca_file: str | None = Field(default=None, description="CA file that signed the server's cert")
    verify_identity: bool = Field(
        default=True, description="With tls: the certificate must name host"
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    read_timeout: float = Field(default=30.0, gt=0)

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        return existing_file(value, "ca_file")

    @model_validator(mode="after")
    def _tls_for_ca(self) -> MysqlOptions:
        if self.ca_file and not self.tls:
            raise ValueError("ca_file is set but tls is false: set tls = true")
        return self


class MysqlPasswordOptions(MysqlOptions):
    """Options of ``mysql-password``: one account whose password changes in place."""

    username: str = Field(min_length=1, description="The user part of the rotated account")
    admin_secret_path: str | None = Field(
        default=None,
        description="ScaiVault path of an admin {username, password} with CREATE USER; "
        "unset: the account changes its own password (MariaDB)",
    )


class MysqlDualOptions(MysqlOptions):
    """Options of ``mysql-dual``: two accounts used alternately."""

    users: tuple[str, str] = Field(description="The two accounts' user parts, used alternately")
    admin_secret_path: str = Field(
        description="ScaiVault path of an admin {username, password} with CREATE USER, PROCESS"
    )

    @field_validator("users")
    @classmethod
    def _two(cls, value: tuple[str, str]) -> tuple[str, str]:
        if value[0] == value[1] or not all(value):
            raise ValueError("users names two different, non-empty accounts")
        return value
