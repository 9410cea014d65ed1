"""The logins the PostgreSQL rotators use: the one a secret's data holds, and the admin's.

The admin credential is a *separate* ScaiVault secret (``admin_secret_path``, holding
``username`` and ``password``), read when a step needs it and never kept. A rotator refuses to
rotate the secret or the role it authenticates with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rotators.contract import RotationContext
from rotators.errors import CredentialRejected, PermanentError
from rotators.postgres.options import ServerOptions, check_role_name
from rotators.postgres.session import (
    Connection,
    Login,
    LoginRefused,
    connect,
    login_check,
    using,
)
from rotators.secret import Secret

#: The fields of the admin secret at ``admin_secret_path``.
ADMIN_FIELDS = ("username", "password")


def login_of(
    data: Mapping[str, Any],
    options: ServerOptions,
    which: str,
    fields: tuple[str, str] | None = None,
) -> Login:
    """The role and password ``data`` holds (``which`` names the data in messages)."""
    user_field, password_field = fields or (options.username_field, options.password_field)
    role, password = data.get(user_field), data.get(password_field)
    if not isinstance(role, str) or not role:
        raise PermanentError(f"the {which} secret has no role name in field {user_field!r}")
    try:
        check_role_name(role)
    except ValueError as exc:
        raise PermanentError(f"the {which} secret's field {user_field!r}: {exc}") from None
    if not isinstance(password, str) or not password:
        raise PermanentError(f"the {which} secret has no password in field {password_field!r}")
    return Login(role, Secret(password))


def admin_login(ctx: RotationContext[Any], path: str, rotating: Iterable[str]) -> Login:
    """The admin credential at ``path``; refuses when it is the rotated secret or role."""
    if path.strip("/") == ctx.path.strip("/"):
        raise PermanentError("admin_secret_path is the secret being rotated (self-rotation)")
    admin = login_of(ctx.vault.read(path).data, ctx.options, f"admin ({path})", ADMIN_FIELDS)
    if admin.role in set(rotating):
        raise PermanentError(
            f"refusing to rotate role {admin.role!r}, which the rotator authenticates with: use "
            "a separate admin role at admin_secret_path"
        )
    return admin


@contextmanager
def admin_session(
    ctx: RotationContext[Any], path: str, rotating: Iterable[str]
) -> Iterator[Connection]:
    """A connection as the admin credential at ``path`` (a refused one is a plain
    :class:`PermanentError`, never mistaken for a refusal of the rotated role)."""
    admin = admin_login(ctx, path, rotating)
    options: ServerOptions = ctx.options
    try:
        conn = connect(options, admin, "admin")
    except LoginRefused:
        raise PermanentError(
            f"{options.where()} refuses the admin credential at {path} (role {admin.role!r}): "
            "store its right password there"
        ) from None
    with using(conn, f"admin on {options.where()}") as admin_conn:
        yield admin_conn


def verify_login(ctx: RotationContext[Any], login: Login) -> None:
    """``verify``: a new connection with ``login``, to the server that took the change. The
    server applies ``ALTER ROLE`` to every connection that starts after it, so a refusal is
    final: :class:`CredentialRejected`, saying why. A server that cannot be reached stays a
    :class:`TransientError` (retried for the rotator's ``verify_timeout``)."""
    try:
        login_check(ctx.options, login)
    except LoginRefused as refused:
        raise CredentialRejected(
            f"the new login is refused: {refused.message}", step="verify"
        ) from None
    ctx.log.info("postgres_login_verified", role=login.role, step="verify")
