"""The conformance kit's example UPDATER (test-only, not a production rotator): a Redis ACL user
changes its own password in place.

Redis users are rotated in production by the built-in ``redis-acl`` (an issuer: ACL users hold
two passwords at once). This one exists because the suite needs an updater, whose only value is
lost on a crash unless sealed, on the Redis every stack already runs: the engine's sealing,
crash-between-apply-and-store and rollback tests, and the kit's updater checks, use it.

The secret's data is ``{"username": ..., "password": ...}``; the target Redis comes from the routing
file's ``options.redis_url`` only, never from the secret (docs/architecture.md, I6: a writer of
secret data must not be able to send credentials elsewhere). There is one password at a time, so a
lost new value would lock the account out: this is the rotator that proves the engine's sealing.

- ``mint``: a new random password (``secrets``), every other field kept.
- ``apply``: check first: if the new password already works, it is applied. Otherwise AUTH with
  the current password and ``ACL SETUSER <user> on resetpass >new``. If neither works, stop
  (PermanentError): someone else changed it.
- ``verify``: AUTH with the new password.
- ``finalize``: nothing to revoke, the change was in place.

The user needs ``+acl|setuser`` (and ``+ping``) on the target. ``options.signal_url`` and
``options.hold`` wire in :class:`tests.rotators.hook.StepHook` for crash tests.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

import redis
from pydantic import BaseModel, ConfigDict, Field

from rotators import (
    CredentialRejected,
    PermanentError,
    RotationContext,
    Rotator,
    SecretData,
    TransientError,
)
from tests.rotators.hook import StepHook

POINTS = ("after_mint", "before_apply", "after_apply", "before_verify", "after_verify")


class AclPasswordOptions(BaseModel):
    """Routing-file options of ``acl-password``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str = Field(pattern=r"^redis://[^@]+$")  # no credentials in the URL itself
    length: int = Field(default=24, ge=16, le=256)
    signal_url: str | None = None
    hold: list[str] = Field(default_factory=list)


class AclPasswordRotator(Rotator):
    """Changes a Redis ACL user's password, authenticated as that user."""

    name = "acl-password"
    strategy = "updater"
    Options: ClassVar[type[BaseModel]] = AclPasswordOptions
    verify_timeout: ClassVar[float] = 5.0

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        """Keep the username (and anything else); a fresh password."""
        options = _options(ctx)
        data = dict(ctx.current.data)
        data["password"] = secrets.token_urlsafe(options.length)
        _hook(options).reach(ctx.rotation_id, "after_mint")
        return data

    def apply(self, ctx: RotationContext, new: SecretData) -> None:
        """Make the target accept ``new``; "already accepts it" is success."""
        options = _options(ctx)
        hook = _hook(options)
        hook.reach(ctx.rotation_id, "before_apply")
        user = str(new["username"])
        if accepts(options.redis_url, user, str(new["password"])):
            ctx.log.info("acl_password_already_applied", path=ctx.path, step="apply")
        else:
            _set_password(options.redis_url, user, ctx.current.data, str(new["password"]))
            ctx.log.info("acl_password_applied", path=ctx.path, step="apply")
        hook.reach(ctx.rotation_id, "after_apply")

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        """AUTH with the new password. The change is in place and immediate, so a refused
        password is not the user's password: final, not transient."""
        options = _options(ctx)
        hook = _hook(options)
        hook.reach(ctx.rotation_id, "before_verify")
        if not accepts(options.redis_url, str(new["username"]), str(new["password"])):
            raise CredentialRejected("the target refuses the password", step="verify")
        hook.reach(ctx.rotation_id, "after_verify")


def accepts(url: str, username: str, password: str) -> bool:
    """True when ``username``/``password`` authenticate at ``url``; False when refused."""
    client = redis.Redis.from_url(
        url, username=username, password=password, socket_timeout=5, retry=None
    )
    try:
        client.ping()
        return True
    except redis.AuthenticationError:
        return False
    except redis.RedisError as exc:
        raise TransientError(f"target unreachable ({type(exc).__name__})") from None
    finally:
        client.close()


def _set_password(url: str, user: str, current: SecretData, new_password: str) -> None:
    old = str(current.get("password", ""))
    client = redis.Redis.from_url(url, username=user, password=old, socket_timeout=5, retry=None)
    try:
        client.execute_command("ACL", "SETUSER", user, "on", "resetpass", f">{new_password}")
    except redis.AuthenticationError:
        raise PermanentError(
            "neither the current nor the new password is accepted by the target; "
            "someone else changed it: set it by hand and store it in ScaiVault",
            step="apply",
        ) from None
    except redis.RedisError as exc:
        # Redis may echo the modifier (and so the password) in the error text: drop the text.
        raise TransientError(f"ACL SETUSER failed ({type(exc).__name__})", step="apply") from None
    finally:
        client.close()


def _options(ctx: RotationContext) -> AclPasswordOptions:
    if isinstance(ctx.options, AclPasswordOptions):
        return ctx.options
    return AclPasswordOptions.model_validate(ctx.options.model_dump())


def _hook(options: AclPasswordOptions) -> StepHook:
    return StepHook(options.signal_url, options.hold)
