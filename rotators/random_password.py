"""The built-in ``random-password`` rotator: a new random password in one field of the secret.

Strategy ``vault-only``: the value lives only in ScaiVault (both sides read it from there), so
there is nothing to apply at or revoke from a target. Every other field of the secret's data is
kept. Randomness comes from :mod:`secrets` only.

Routing-file options::

    [rules.options]
    length = 32            # 12..1024
    field = "password"     # which field of the JSON secret to replace
    lowercase = true       # character classes; at least one, and each enabled one is used
    uppercase = true
    digits = true
    symbols = true
    symbols_set = "!#$%&()*+,-.:;<=>?@^_~"
    exclude = "lI1O0"      # characters never used
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from rotators.contract import RotationContext, Rotator
from rotators.errors import CredentialRejected
from rotators.passwords import PasswordPolicy, generate, policy_problem
from rotators.secret import SecretData


class RandomPasswordOptions(PasswordPolicy):
    """Options of ``random-password`` (the routing file's ``[rules.options]``): the password
    policy and which field of the secret holds the password."""

    field: str = Field(default="password", min_length=1)


class RandomPasswordRotator(Rotator[RandomPasswordOptions]):
    """Replaces one field of a JSON secret with a fresh random password."""

    name = "random-password"
    strategy = "vault-only"
    Options: ClassVar[type[BaseModel]] = RandomPasswordOptions
    verify_timeout: ClassVar[float] = 0.0

    def mint(self, ctx: RotationContext[RandomPasswordOptions]) -> dict[str, Any]:
        """Keep every field of the current data; put a new password in ``options.field``."""
        options = ctx.options
        data = dict(ctx.current.data)
        data[options.field] = generate(options)
        return data

    def verify(self, ctx: RotationContext[RandomPasswordOptions], new: SecretData) -> None:
        """The field exists and meets the policy; otherwise :class:`CredentialRejected`."""
        options = ctx.options
        if options.field not in new:
            raise CredentialRejected(f"field {options.field!r} is missing", step="verify")
        problem = policy_problem(new[options.field], options)
        if problem:
            raise CredentialRejected(f"field {options.field!r} {problem}", step="verify")
