"""Logins of the database rotators: a username and password held in a secret's data, and the
separate admin login a rotator reads from ``admin_secret_path``.

The fields holding the two values are options (``username_field``, ``password_field``), so a
secret laid out as ``{"user": ..., "pass": ...}`` rotates as well; an admin secret always holds
``username`` and ``password``. The password travels as a
:class:`~rotators.Secret`, whose ``repr`` is redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rotators.contract import RotationContext
from rotators.errors import PermanentError
from rotators.passwords import PasswordPolicy
from rotators.secret import Secret


class LoginFields(BaseModel):
    """Options shared by the database rotators: where the login sits in the data, and the
    policy of the passwords they generate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username_field: str = Field(default="username", min_length=1)
    password_field: str = Field(default="password", min_length=1)
    password: PasswordPolicy = Field(
        default=PasswordPolicy(),
        description="How generated passwords look ([rules.options.password])",
    )


def existing_file(value: str | None, option: str) -> str | None:
    """A CA file option: unset, or a file that exists, checked when the routing file loads
    rather than at the first rotation that needs it."""
    if value is not None and not Path(value).is_file():
        raise ValueError(f"{option} {value!r} is not a file (the CA file must exist)")
    return value


#: Where an admin secret holds its login: always ``username`` and ``password``.
ADMIN_FIELDS = LoginFields()


@dataclass(frozen=True)
class Login:
    """A username and its password."""

    username: str
    password: Secret


def login_of(data: Mapping[str, Any], what: str, fields: LoginFields | None = None) -> Login:
    """The login held in ``data`` (in ``fields``; ``username``/``password`` when None), or
    :class:`PermanentError` naming the field that is missing or not a string (``what`` says
    whose data it is: "current", "new", "admin")."""
    fields = fields or ADMIN_FIELDS
    values = []
    for name in (fields.username_field, fields.password_field):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise PermanentError(f"the {what} secret has no string field {name!r}")
        values.append(value)
    return Login(values[0], Secret(values[1]))


def with_login(
    data: Mapping[str, Any], fields: LoginFields, username: str, password: str
) -> dict[str, Any]:
    """``data`` with its login replaced (every other field kept)."""
    return {**data, fields.username_field: username, fields.password_field: password}


def admin_login(ctx: RotationContext[Any], admin_secret_path: str, *rotated: str) -> Login:
    """The admin login stored at ``admin_secret_path`` (read with ``ctx.vault``).

    Refuses (:class:`PermanentError`) when that path is the secret being rotated, or when the
    admin's username is one of the ``rotated`` accounts: a rotator never changes the password
    it authenticates with.
    """
    if admin_secret_path.strip("/") == ctx.path.strip("/"):
        raise PermanentError("admin_secret_path is the secret being rotated (self-rotation)")
    login = login_of(ctx.vault.read(admin_secret_path).data, "admin")
    if login.username in rotated:
        raise PermanentError(
            f"the admin credential at admin_secret_path is account {login.username!r}, which "
            "this rule rotates; use a separate admin account"
        )
    return login
