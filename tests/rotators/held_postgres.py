"""Test-only PostgreSQL rotators that can be held inside a step (for crash tests).

They are the built-in rotators unchanged, plus :class:`tests.rotators.hook.StepHook`:
``test-postgres-held`` (``postgres-password``) at ``after_apply``, so the worker can be
SIGKILLed while the server already has the new password and ScaiVault still holds the old one;
``test-postgres-dual-held`` (``postgres-dual``) at ``after_mint``, after the new role's password
was set but before the engine could seal it. The hook's options exist only here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from rotators import RotationContext, SecretData
from rotators.postgres.dual import PostgresDualRotator
from rotators.postgres.options import PostgresDualOptions, PostgresPasswordOptions
from rotators.postgres.password import PostgresPasswordRotator
from tests.rotators.hook import StepHook


class HeldPostgresOptions(PostgresPasswordOptions):
    """``postgres-password``'s options and the hook's."""

    signal_url: str | None = None
    hold: list[str] = Field(default_factory=list)


class HeldPostgresPassword(PostgresPasswordRotator):
    """``postgres-password`` announcing (and, if asked, holding at) ``after_apply``."""

    name = "test-postgres-held"
    Options: ClassVar[type[BaseModel]] = HeldPostgresOptions

    def apply(self, ctx: RotationContext, new: SecretData) -> None:  # type: ignore[override]
        super().apply(ctx, new)
        options = ctx.options
        assert isinstance(options, HeldPostgresOptions)
        StepHook(options.signal_url, options.hold).reach(ctx.rotation_id, "after_apply")


class HeldDualOptions(PostgresDualOptions):
    """``postgres-dual``'s options and the hook's."""

    signal_url: str | None = None
    hold: list[str] = Field(default_factory=list)


class HeldPostgresDual(PostgresDualRotator):
    """``postgres-dual`` announcing (and, if asked, holding at) ``after_mint``."""

    name = "test-postgres-dual-held"
    Options: ClassVar[type[BaseModel]] = HeldDualOptions

    def mint(self, ctx: RotationContext) -> dict[str, Any]:  # type: ignore[override]
        new = super().mint(ctx)
        options = ctx.options
        assert isinstance(options, HeldDualOptions)
        StepHook(options.signal_url, options.hold).reach(ctx.rotation_id, "after_mint")
        return new
