"""A test-only ``postgres-password`` that can be held right after ``apply`` (for crash tests).

It is the built-in rotator unchanged, plus :class:`tests.rotators.hook.StepHook` at
``after_apply``: the worker can be SIGKILLed while the server already has the new password and
ScaiVault still holds the old one. The hook's options exist only here, never in production.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from rotators import RotationContext, SecretData
from rotators.postgres.options import PostgresPasswordOptions
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
