"""Routing-file options of the ``redis-acl`` rotator: the server and TLS, one ACL user
(``username``) or two used alternately (``users``), the admin login's path and timeouts."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from rotators.login import LoginFields, existing_file


class RedisAclOptions(LoginFields):
    """Routing-file options of ``redis-acl``: the server, and ``username`` or ``users``."""

    host: str = Field(min_length=1, description="The Redis server's host name or address")
    port: int = Field(default=6379, ge=1, le=65535)
    tls: bool = Field(default=False, description="Connect over TLS (required with ca_file)")
    ca_file: str | None = Field(default=None, description="CA file that signed the server's cert")
    verify_identity: bool = Field(
        default=True, description="With tls: the certificate must name host"
    )
    username: str | None = Field(default=None, description="One ACL user holding two passwords")
    users: tuple[str, str] | None = Field(
        default=None, description="Two ACL users used alternately (instead of username)"
    )
    admin_secret_path: str = Field(
        description="ScaiVault path of the admin {username, password} that changes ACL users"
    )
    acl_save: bool = Field(default=False, description="ACL SAVE after each change (aclfile)")
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    socket_timeout: float = Field(default=10.0, gt=0)

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        return existing_file(value, "ca_file")

    @field_validator("users")
    @classmethod
    def _two(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        if value is not None and (value[0] == value[1] or not all(value)):
            raise ValueError("users names two different, non-empty ACL users")
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> RedisAclOptions:
        if (self.username is None) == (self.users is None):
            raise ValueError("set exactly one of username (one user) or users (two users)")
        if self.ca_file and not self.tls:
            raise ValueError("ca_file is set but tls is false: set tls = true")
        return self

    @property
    def rotated(self) -> tuple[str, ...]:
        """The ACL users this rule rotates."""
        return self.users or (str(self.username),)
