"""The ``mysql-password`` rotator: one MySQL/MariaDB account whose password changes in place.

Strategy ``updater``. The account is ``'username'@'account_host'`` from the rule's options
(never from the secret: a writer of secret data must not choose whose password is changed).
``apply`` checks first (the new password already logs in: done), then changes it: as the admin
at ``admin_secret_path`` when set (``ALTER USER ... IDENTIFIED WITH mysql_native_password AS
'<hash>'``, which needs CREATE USER), else as the account itself with the password ScaiVault
holds now (``SET PASSWORD = '<hash>'``, MariaDB only). The hash is computed here, so the
plaintext never reaches the server's logs. There is nothing to revoke at finalize.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from rotators.contract import RotationContext, Rotator, host_target
from rotators.errors import CredentialRejected, PermanentError
from rotators.login import Login, admin_login, login_of, with_login
from rotators.mysql.options import MysqlPasswordOptions
from rotators.mysql.server import Account, LoginRefused, MysqlServer
from rotators.passwords import generate
from rotators.secret import SecretData

Context = RotationContext[MysqlPasswordOptions]


class MysqlPasswordRotator(Rotator[MysqlPasswordOptions]):
    """Changes one account's password in place (the single-user rotation)."""

    name = "mysql-password"
    strategy = "updater"
    Options: ClassVar[type[BaseModel]] = MysqlPasswordOptions
    verify_timeout: ClassVar[float] = 15.0

    def target(self, options: MysqlPasswordOptions) -> str:
        """The server this rule rotates on, ``host:port``: rules on one server share its budget."""
        return host_target(options.host, options.port)

    def mint(self, ctx: Context) -> dict[str, Any]:
        """A fresh password for the rule's account; every other field kept. :meth:`preflight`
        runs first (read only): an unreachable server or a missing grant stops the rotation
        before a password exists."""
        options = ctx.options
        _check_username(ctx.current.data, options)
        self.preflight(ctx)
        ctx.log.info("mysql_password_minted", account=str(_account(options)))
        return with_login(ctx.current.data, options, options.username, generate(options.password))

    def apply(self, ctx: Context, new: SecretData) -> None:
        """Make the account take ``new``; "it already does" is success."""
        options = ctx.options
        target = login_of(new, "new", options)
        _check_login(target, options)
        server = MysqlServer(options)
        account = _account(options)
        if server.accepts(target):
            ctx.log.info("mysql_password_already_applied", account=str(account), step="apply")
            return
        if options.admin_secret_path:
            admin = admin_login(ctx, options.admin_secret_path, options.username)
            server.change_password(admin, account, target.password.reveal())
        else:
            self._change_own(ctx, server, target)
        ctx.log.info("mysql_password_applied", account=str(account), step="apply")

    def verify(self, ctx: Context, new: SecretData) -> None:
        """A new connection logs in as the account with ``new``."""
        target = login_of(new, "new", ctx.options)
        _check_login(target, ctx.options)
        if not MysqlServer(ctx.options).accepts(target):
            raise CredentialRejected(
                "the server refuses the new password (ALTER USER applies at once)", step="verify"
            )
        ctx.log.info("mysql_password_verified", account=str(_account(ctx.options)))

    def preflight(self, ctx: Context) -> None:
        """The server has ``mysql_native_password`` and whoever sets the password may: an
        admin, when set, logs in and holds CREATE USER (then ScaiVault's current password need
        not work: the admin's change repairs one that drifted); without one, the current
        password logs in and the server is MariaDB."""
        options = ctx.options
        server = MysqlServer(options)
        if options.admin_secret_path:
            admin = admin_login(ctx, options.admin_secret_path, options.username)
            server.require_native_password(admin)
            missing = server.missing_privileges(admin, ("CREATE USER",))
            if missing:
                raise PermanentError(
                    f"the admin account {admin.username!r} lacks the global CREATE USER "
                    "privilege: GRANT CREATE USER ON *.* TO it"
                )
            return
        current = login_of(ctx.current.data, "current", options)
        _check_login(current, options)
        try:
            with server.session(current, "logging in with the current password"):
                pass
        except LoginRefused:
            raise PermanentError(
                f"ScaiVault's current password of {_account(options)} does not log in"
            ) from None
        server.require_native_password(current)
        if not server.is_mariadb(current):
            raise PermanentError(
                "without admin_secret_path the account changes its own password, which only "
                "MariaDB accepts as a hash: set admin_secret_path"
            )

    def _change_own(self, ctx: Context, server: MysqlServer, target: Login) -> None:
        """The account changes its own password, logged in with the one ScaiVault holds now."""
        current = login_of(ctx.current.data, "current", ctx.options)
        try:
            server.change_own_password(current, target.password.reveal())
        except LoginRefused:
            raise PermanentError(
                "neither ScaiVault's current password nor the new one logs in: someone else "
                "changed it; set it by hand and store it in ScaiVault",
                step="apply",
            ) from None


def _account(options: MysqlPasswordOptions) -> Account:
    return Account(options.username, options.account_host)


def _check_username(data: SecretData, options: MysqlPasswordOptions) -> None:
    """The secret's username, when present, must be the rule's account."""
    found = data.get(options.username_field)
    if found is not None and found != options.username:
        raise PermanentError(
            f"the secret's {options.username_field!r} is {found!r}, but the rule rotates "
            f"{options.username!r}"
        )


def _check_login(login: Login, options: MysqlPasswordOptions) -> None:
    if login.username != options.username:
        raise PermanentError(
            f"the secret's user {login.username!r} is not the rule's account {options.username!r}"
        )
