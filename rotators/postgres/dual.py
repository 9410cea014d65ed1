"""The ``postgres-dual`` rotator: two roles used alternately (an issuer).

The secret names one of ``users`` (``app_a``); each rotation gives the *other* role (``app_b``) a
fresh password and switches the secret to it, so consumers still on ``app_a`` keep working
through the grace period. The admin credential at ``admin_secret_path`` does all of it.

- **mint**: set a new password on the inactive role and return data naming it (every other
  field kept). A repeated mint in the same rotation sets another password on the same role:
  the earlier one stops working, so no password nobody knows is left behind.
- **verify**: a new connection as the new role with its new password.
- **in_use**: the old role's client sessions in ``pg_stat_activity`` (every database): how many,
  from where, which applications, since when. Finalize waits while there are any.
- **finalize**: if the old role still accepts the old password, give it a random one that is
  never stored (and with ``terminate_sessions``, end its remaining sessions). An old password
  already refused is success; a role whose password someone else changed is left alone.
- **discard**: the same for a minted credential that will never be used (an abandoned or
  rolled-back rotation).
"""

from __future__ import annotations

from typing import Any

from rotators.contract import RotationContext, Rotator, Usage, host_target
from rotators.errors import PermanentError, TransientError
from rotators.passwords import generate
from rotators.postgres import roles
from rotators.postgres.logins import admin_session, login_of, verify_login
from rotators.postgres.options import PostgresDualOptions
from rotators.postgres.session import Login, accepts
from rotators.secret import Secret, SecretData

#: What this rotator's steps receive.
Context = RotationContext[PostgresDualOptions]


class PostgresDualRotator(Rotator[PostgresDualOptions]):
    """Alternates a secret between two PostgreSQL roles."""

    name = "postgres-dual"
    strategy = "issuer"
    can_discard = True
    Options = PostgresDualOptions
    verify_timeout = 10.0

    def target(self, options: PostgresDualOptions) -> str:
        """The server this rule rotates on, ``host:port``: rules on one server share its budget."""
        return host_target(options.host, options.port)

    def mint(self, ctx: Context) -> dict[str, Any]:
        """A fresh password on the role the secret does not name; data naming that role."""
        options = ctx.options
        current = self._login(ctx, ctx.current.data, "current")
        role = next(user for user in options.users if user != current.role)
        password = Secret(generate(options.password))
        with admin_session(ctx, options.admin_secret_path, options.users) as conn:
            roles.set_password(conn, role, password, denied=_hint(conn, role))
        ctx.log.info("postgres_dual_minted", role=role, previous_role=current.role, step="mint")
        return {
            **ctx.current.data,
            options.username_field: role,
            options.password_field: password.reveal(),
        }

    def verify(self, ctx: Context, new: SecretData) -> None:
        """Log in as the new role with its new password (a refusal is final)."""
        verify_login(ctx, self._login(ctx, new, "new"))

    def in_use(self, ctx: Context, old: SecretData) -> Usage | None:
        """The old role's client sessions, as the admin sees them in ``pg_stat_activity``."""
        options = ctx.options
        login = self._login(ctx, old, "old")
        with admin_session(ctx, options.admin_secret_path, options.users) as conn:
            return roles.usage(conn, login.role)

    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        """Revoke the old role's password (a random one nobody keeps), if it still works."""
        old_login = self._login(ctx, old, "old")
        new_login = self._login(ctx, new, "new")
        if old_login.role == new_login.role:
            raise PermanentError(
                f"old and new name the same role {old_login.role!r}: nothing to revoke safely"
            )
        self._revoke(ctx, old_login, "finalize")

    def discard(self, ctx: Context, new: SecretData) -> None:
        """Revoke a minted password that will never be used, if it still works."""
        self._revoke(ctx, self._login(ctx, new, "new"), "discard")

    def preflight(self, ctx: Context) -> None:
        """The admin works and may set both roles' passwords; both roles exist and may log
        in; the secret names one of them. Without ``pg_read_all_stats`` the wait for unused
        credentials sees sessions but not their addresses (a warning)."""
        options = ctx.options
        self._login(ctx, ctx.current.data, "current")
        with admin_session(ctx, options.admin_secret_path, options.users) as conn:
            who = roles.admin(conn)
            for user in options.users:
                roles.require_login_role(conn, who, user)
        if options.terminate_sessions and not (who.superuser or who.signals_backends):
            raise PermanentError(
                f"terminate_sessions needs role {who.name!r} to end other sessions: "
                f"GRANT pg_signal_backend TO {who.name}"
            )
        if not (who.superuser or who.reads_all_stats):
            ctx.log.warning(
                "postgres_usage_limited",
                admin=who.name,
                fix=f"GRANT pg_read_all_stats TO {who.name}",
            )

    # --- helpers ----------------------------------------------------------------------------

    def _login(self, ctx: Context, data: SecretData | dict[str, Any], which: str) -> Login:
        """``data``'s login, which must name one of ``users``."""
        login = login_of(data, ctx.options, which)
        if login.role not in ctx.options.users:
            raise PermanentError(
                f"the {which} secret names role {login.role!r}, which is not one of users "
                f"{list(ctx.options.users)}"
            )
        return login

    def _revoke(self, ctx: Context, login: Login, step: str) -> None:
        """Give ``login.role`` a random password if ``login`` still works; with
        ``terminate_sessions``, end the role's sessions too (also when already revoked, so a
        resumed finalize finishes the job)."""
        options = ctx.options
        revoked = accepts(options, login)
        if revoked or options.terminate_sessions:
            with admin_session(ctx, options.admin_secret_path, options.users) as conn:
                if revoked:
                    roles.set_password(conn, login.role, Secret(generate(options.password)))
                if options.terminate_sessions:
                    ended = roles.terminate(conn, login.role)
                    ctx.log.info(
                        "postgres_sessions_ended", role=login.role, sessions=ended, step=step
                    )
        if revoked and accepts(options, login):
            raise TransientError(f"role {login.role!r} still accepts its old password")
        event = "postgres_password_revoked" if revoked else "postgres_password_already_revoked"
        ctx.log.info(event, role=login.role, step=step)


def _hint(conn: Any, role: str) -> str:
    who = roles.admin(conn)
    return roles.grant_hint(who.name, role, who.version)
