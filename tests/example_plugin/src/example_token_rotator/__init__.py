"""Example scaivault-rotator plugin: ``example-token``, a prefixed random API token.

Strategy ``vault-only``: the token lives only in ScaiVault and both sides read it from there,
so there is nothing to apply or revoke at a target. A real issuer would call its target's API
in ``mint``/``verify``/``finalize``; see ``docs/writing-rotators.md``.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rotators import CredentialRejected, RotationContext, Rotator, SecretData


class ExampleTokenOptions(BaseModel):
    """Routing-file options (``[rules.options]``); unknown keys are refused when config loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(default="ex_", pattern=r"^[a-z]{1,8}_$")
    nbytes: int = Field(default=24, ge=16, le=64)
    field: str = Field(default="token", min_length=1)


class ExampleTokenRotator(Rotator[ExampleTokenOptions]):
    """Replaces ``data[field]`` with ``prefix + token_hex(nbytes)``; keeps every other field."""

    name = "example-token"
    strategy = "vault-only"
    Options = ExampleTokenOptions
    verify_timeout = 0.0

    def mint(self, ctx: RotationContext[ExampleTokenOptions]) -> dict[str, Any]:
        options = ctx.options
        token = options.prefix + secrets.token_hex(options.nbytes)
        ctx.log.info("example_token_minted", field=options.field, length=len(token))
        return {**ctx.current.data, options.field: token}

    def verify(self, ctx: RotationContext[ExampleTokenOptions], new: SecretData) -> None:
        options = ctx.options
        value = new.get(options.field)
        expected = len(options.prefix) + 2 * options.nbytes
        if not isinstance(value, str) or not value.startswith(options.prefix):
            raise CredentialRejected(f"field {options.field!r} lacks the prefix")
        if len(value) != expected:
            raise CredentialRejected(f"field {options.field!r} has the wrong length")
