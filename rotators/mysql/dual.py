"""The ``mysql-dual`` rotator: two MySQL/MariaDB accounts used alternately.

Strategy ``issuer``. The rule names the two accounts (``users``, each ``'user'@'account_host'``);
the secret holds the one in use. ``mint`` sets a fresh password on the *other* one (as the admin
at ``admin_secret_path``, by hash) and returns it, so the account in use keeps working through
grace. A second mint in the same rotation sets another password on that same account, which
replaces the first: never two new credentials. ``finalize`` revokes the old account's password
(sets one nobody knows) unless it is already refused; ``in_use`` reports the old account's
sessions from the process list, so finalize can wait for its consumers to move. The admin
needs the global CREATE USER and PROCESS privileges.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from rotators.contract import RotationContext, Rotator, Usage, host_target
from rotators.errors import CredentialRejected, PermanentError, TransientError
from rotators.login import Login, admin_login, login_of, with_login
from rotators.mysql.options import MysqlDualOptions
from rotators.mysql.server import Account, MysqlServer
from rotators.passwords import generate
from rotators.secret import SecretData

Context = RotationContext[MysqlDualOptions]

#: The admin's global privileges: change other accounts' passwords, see their sessions.
ADMIN_PRIVILEGES = ("CREATE USER", "PROCESS")


class MysqlDualRotator(Rotator[MysqlDualOptions]):
    """Alternates between two accounts; finalize revokes the one no longer stored."""

    name = "mysql-dual"
    strategy = "issuer"
    can_discard = True
    Options: ClassVar[type[BaseModel]] = MysqlDualOptions
    verify_timeout: ClassVar[float] = 15.0

    def target(self, options: MysqlDualOptions) -> str:
        """The server this rule rotates on, ``host:port``: rules on one server share its budget."""
        return host_target(options.host, options.port)

    def mint(self, ctx: Context) -> dict[str, Any]:
        """A fresh password on the account not in use; returns it as the whole new data."""
        options = ctx.options
        standby = standby_user(ctx.current.data, options)
        password = generate(options.password)
        admin = admin_login(ctx, options.admin_secret_path, *options.users)
        MysqlServer(options).change_password(admin, _account(options, standby), password)
        ctx.log.info("mysql_dual_minted", account=str(_account(options, standby)))
        return with_login(ctx.current.data, options, standby, password)

    def verify(self, ctx: Context, new: SecretData) -> None:
        """A new connection logs in with ``new``."""
        login = _rule_login(new, "new", ctx.options)
        if not MysqlServer(ctx.options).accepts(login):
            raise CredentialRejected(
                "the server refuses the new password (ALTER USER applies at once)", step="verify"
            )
        ctx.log.info("mysql_dual_verified", account=str(_account(ctx.options, login.username)))

    def in_use(self, ctx: Context, old: SecretData) -> Usage | None:
        """The sessions open as the old account's user, with their client hosts."""
        options = ctx.options
        user = _rule_login(old, "old", options).username
        admin = admin_login(ctx, options.admin_secret_path, *options.users)
        return MysqlServer(options).usage(admin, user)

    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        """Revoke the old account's password; already refused is success."""
        options = ctx.options
        previous = _rule_login(old, "old", options)
        if previous.username == _rule_login(new, "new", options).username:
            raise PermanentError("old and new are the same account: nothing to revoke safely")
        self._revoke(ctx, previous, "finalize")

    def discard(self, ctx: Context, new: SecretData) -> None:
        """Revoke the unused new account's password (it was never stored, or rolled back)."""
        self._revoke(ctx, _rule_login(new, "new", ctx.options), "discard")

    def preflight(self, ctx: Context) -> None:
        """The admin logs in and holds CREATE USER and PROCESS; the current login works; the
        server has ``mysql_native_password``."""
        options = ctx.options
        server = MysqlServer(options)
        admin = admin_login(ctx, options.admin_secret_path, *options.users)
        missing = server.missing_privileges(admin, ADMIN_PRIVILEGES)
        if missing:
            grants = ", ".join(missing)
            raise PermanentError(
                f"the admin account {admin.username!r} lacks the global {grants} privilege: "
                f"GRANT {grants} ON *.* TO it (CREATE USER changes passwords, PROCESS shows "
                "who still uses the old account)"
            )
        current = _rule_login(ctx.current.data, "current", options)
        if not server.accepts(current):
            raise PermanentError(
                f"ScaiVault's current login of {_account(options, current.username)} is refused"
            )
        server.require_native_password(admin)

    def _revoke(self, ctx: Context, login: Login, step: str) -> None:
        """Set a password nobody knows on ``login``'s account, unless ``login`` is refused."""
        options = ctx.options
        server = MysqlServer(options)
        account = _account(options, login.username)
        if not server.accepts(login):
            ctx.log.info("mysql_dual_already_revoked", account=str(account), step=step)
            return
        admin = admin_login(ctx, options.admin_secret_path, *options.users)
        server.change_password(admin, account, generate(options.password))
        if server.accepts(login):
            raise TransientError("the revoked password still logs in; checking again", step=step)
        ctx.log.info("mysql_dual_revoked", account=str(account), step=step)


def standby_user(data: SecretData, options: MysqlDualOptions) -> str:
    """The rule's other account: the one the secret does not hold now."""
    current = data.get(options.username_field)
    if current not in options.users:
        raise PermanentError(
            f"the secret's {options.username_field!r} is {current!r}, not one of the rule's "
            f"users {list(options.users)}"
        )
    return options.users[1] if current == options.users[0] else options.users[0]


def _rule_login(data: SecretData, what: str, options: MysqlDualOptions) -> Login:
    """The login in ``data``; its user must be one of the rule's two."""
    login = login_of(data, what, options)
    if login.username not in options.users:
        raise PermanentError(
            f"the {what} login's user {login.username!r} is not one of the rule's users"
        )
    return login


def _account(options: MysqlDualOptions, user: str) -> Account:
    return Account(user, options.account_host)
