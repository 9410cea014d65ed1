"""Routing-file options of the PostgreSQL rotators: where the server is, how to reach it safely,
which fields of the secret hold the login, and how new passwords look.

The server comes from the routing file only, never from the secret's data (docs/architecture.md,
I6): whoever may write a secret must not be able to send its credentials to another host.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotators.login import existing_file
from rotators.passwords import PasswordPolicy

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

#: The default policy of generated passwords: 32 characters whose symbols need no escaping in a
#: connection URI or a libpq ``key=value`` string, so consumers can paste them anywhere.
DEFAULT_POLICY = PasswordPolicy(symbols_set="-_.~")

#: What a PostgreSQL role name may look like here (``NAMEDATALEN`` is 64 bytes with the NUL).
ROLE_NAME_MAX = 63


def check_role_name(value: str) -> str:
    """``value`` if it can be a role name (it is always quoted as an identifier when sent)."""
    if not value or len(value.encode()) > ROLE_NAME_MAX or "\x00" in value:
        raise ValueError(f"a role name is 1-{ROLE_NAME_MAX} bytes without NUL")
    return value


class ServerOptions(BaseModel):
    """What both PostgreSQL rotators take: the server, TLS, timeouts, fields and password policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, description="Server host name or address")
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = Field(default="postgres", min_length=1, description="Database to connect to")
    sslmode: SslMode = Field(
        default="prefer",
        description="libpq sslmode; use verify-full (with sslrootcert) outside a trusted network",
    )
    sslrootcert: str | None = Field(
        default=None, description="CA file that signed the server's certificate (verify-*)"
    )
    connect_timeout: int = Field(default=10, ge=2, le=300, description="Seconds per connection")
    statement_timeout: int = Field(
        default=30, ge=1, le=3600, description="Seconds a statement may run (e.g. wait on a lock)"
    )
    username_field: str = Field(default="username", min_length=1)
    password_field: str = Field(default="password", min_length=1)
    password: PasswordPolicy = Field(
        default=DEFAULT_POLICY, description="Generated passwords ([rules.options.password])"
    )

    @field_validator("host")
    @classmethod
    def _no_url(cls, value: str) -> str:
        if "/" in value or "@" in value or value.strip() != value:
            raise ValueError("expected a host name or address, not a URL or socket folder")
        return value

    @field_validator("sslrootcert")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        return existing_file(value, "sslrootcert")

    @model_validator(mode="after")
    def _fields_differ(self) -> ServerOptions:
        if self.username_field == self.password_field:
            raise ValueError("username_field and password_field must be different fields")
        if self.sslmode in ("verify-ca", "verify-full") and not self.sslrootcert:
            raise ValueError(f"sslmode {self.sslmode} needs sslrootcert (the CA file)")
        return self

    def where(self) -> str:
        """``host:port/dbname`` for messages and logs."""
        return f"{self.host}:{self.port}/{self.dbname}"


class PostgresPasswordOptions(ServerOptions):
    """Options of ``postgres-password``: one role whose password changes in place, set by the
    admin credential at ``admin_secret_path`` or, without one, by the role itself."""

    admin_secret_path: str | None = Field(
        default=None,
        min_length=1,
        description="ScaiVault path of an admin credential {username, password} that sets the "
        "password; without it the role changes its own password with its current one",
    )


class PostgresDualOptions(ServerOptions):
    """Options of ``postgres-dual``: two roles used alternately, set by the admin credential."""

    users: tuple[str, str] = Field(
        description='The two roles used alternately, e.g. ["app_a", "app_b"]'
    )
    admin_secret_path: str = Field(
        min_length=1,
        description="ScaiVault path of an admin credential {username, password} that sets "
        "and revokes the two roles' passwords and reads pg_stat_activity",
    )
    terminate_sessions: bool = Field(
        default=False,
        description="After revoking the old role's password, end its remaining sessions "
        "(needs pg_signal_backend)",
    )

    @field_validator("users")
    @classmethod
    def _two_roles(cls, value: tuple[str, str]) -> tuple[str, str]:
        for name in value:
            check_role_name(name)
        if value[0] == value[1]:
            raise ValueError("users must name two different roles")
        return value
