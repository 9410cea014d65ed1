"""The ``postgres-password`` rotator: one role whose password changes in place (an updater).

- **mint**: a new password from the policy; every other field of the secret is kept. It runs
  :meth:`~PostgresPasswordRotator.preflight` first (read only), so a server that is down or
  a missing grant stops the rotation before anything is sealed.
- **apply**: with ``admin_secret_path``, the admin sets the role's password (setting the same
  password again is harmless, so a resume just sets it). Without one, the role changes its own
  password, logged in with the one ScaiVault holds; if that is refused but the new one is
  accepted, the change was already made (a resumed rotation). Either way only the SCRAM
  verifier is sent (:mod:`rotators.postgres.roles`).
- **verify**: a new connection with the new password.
- **finalize**: nothing to revoke; the old password died at ``apply``. One role with one
  password cannot tell its consumers apart, so this rotator does not tell usage (``in_use``):
  use ``postgres-dual`` for an overlap.

The engine seals the minted password before ``apply`` (``ROTATOR_SEAL_KEY``), so a crash
between ``apply`` and the store resumes with the value the server already has.
"""

from __future__ import annotations

from typing import Any

from rotators.contract import RotationContext, Rotator, host_target
from rotators.errors import PermanentError
from rotators.passwords import generate
from rotators.postgres import roles
from rotators.postgres.logins import admin_session, login_of, verify_login
from rotators.postgres.options import PostgresPasswordOptions
from rotators.postgres.session import Login, LoginRefused, accepts, login_check, session
from rotators.secret import SecretData

#: What this rotator's steps receive.
Context = RotationContext[PostgresPasswordOptions]


class PostgresPasswordRotator(Rotator[PostgresPasswordOptions]):
    """Changes one PostgreSQL role's password in place."""

    name = "postgres-password"
    strategy = "updater"
    Options = PostgresPasswordOptions
    verify_timeout = 10.0

    def target(self, options: PostgresPasswordOptions) -> str:
        """The server this rule rotates on, ``host:port``: rules on one server share its budget."""
        return host_target(options.host, options.port)

    def mint(self, ctx: Context) -> dict[str, Any]:
        """The current data with a new password in ``password_field``, once :meth:`preflight`
        found the change can be made: an unreachable server or a missing grant stops the
        rotation before a password exists."""
        options = ctx.options
        login_of(ctx.current.data, options, "current")  # the secret names a role
        self.preflight(ctx)
        return {**ctx.current.data, options.password_field: generate(options.password)}

    def apply(self, ctx: Context, new: SecretData) -> None:
        """Make the server accept ``new``'s password for the role (by the admin, or the role)."""
        options = ctx.options
        target = login_of(new, options, "new")
        current = login_of(ctx.current.data, options, "current")
        if target.role != current.role:
            raise PermanentError(
                f"the new data names role {target.role!r}, the secret role {current.role!r}: "
                "postgres-password changes one role's password, never another's"
            )
        if options.admin_secret_path is not None:
            with admin_session(ctx, options.admin_secret_path, [target.role]) as conn:
                who = roles.admin(conn)
                hint = roles.grant_hint(who.name, target.role, who.version)
                roles.set_password(conn, target.role, target.password, denied=hint)
            ctx.log.info("postgres_password_set", role=target.role, by="admin", step="apply")
            return
        self._change_own(ctx, current, target)

    def _change_own(self, ctx: Context, current: Login, target: Login) -> None:
        """The role sets its own new password, logged in with its current one."""
        options = ctx.options
        try:
            with session(options, current, f"role {current.role}") as conn:
                roles.set_password(conn, target.role, target.password)
        except LoginRefused:
            if accepts(options, target):
                ctx.log.info("postgres_password_already_set", role=target.role, step="apply")
                return
            raise PermanentError(
                f"{options.where()} accepts neither the current nor the new password of role "
                f"{target.role!r}: someone else changed it; set one by hand and store it in "
                "ScaiVault, or give this rule an admin_secret_path"
            ) from None
        ctx.log.info("postgres_password_set", role=target.role, by="role", step="apply")

    def verify(self, ctx: Context, new: SecretData) -> None:
        """Log in as the role with the new password; a refusal is final (the server applies a
        password change to every new connection at once)."""
        login = login_of(new, ctx.options, "new")
        verify_login(ctx, login)

    def preflight(self, ctx: Context) -> None:
        """The role exists and may log in, and whoever sets its password may: the admin (its
        grants) or the role itself (its current password works)."""
        options = ctx.options
        current = login_of(ctx.current.data, options, "current")
        if options.admin_secret_path is None:
            login_check(options, current)
            return
        with admin_session(ctx, options.admin_secret_path, [current.role]) as conn:
            roles.require_login_role(conn, roles.admin(conn), current.role)
