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

import secrets
import string
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rotators.contract import RotationContext, Rotator
from rotators.errors import CredentialRejected
from rotators.secret import SecretData

DEFAULT_SYMBOLS = "!#$%&()*+,-.:;<=>?@^_~"


class RandomPasswordOptions(BaseModel):
    """Options of ``random-password`` (the routing file's ``[rules.options]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=32, ge=12, le=1024)
    field: str = Field(default="password", min_length=1)
    lowercase: bool = True
    uppercase: bool = True
    digits: bool = True
    symbols: bool = True
    symbols_set: str = Field(default=DEFAULT_SYMBOLS, min_length=1)
    exclude: str = ""

    @model_validator(mode="after")
    def _usable(self) -> RandomPasswordOptions:
        if not self.classes():
            raise ValueError(
                "every character class is off or fully excluded; enable at least one of "
                "lowercase, uppercase, digits, symbols"
            )
        empty = [name for name, on in self._flags().items() if on and not self._pool(name)]
        if empty:
            raise ValueError(f"exclude removes every character of {', '.join(empty)}")
        if any(ch.isspace() for ch in self.symbols_set):
            raise ValueError("symbols_set must not contain whitespace")
        return self

    def _flags(self) -> dict[str, bool]:
        return {
            "lowercase": self.lowercase,
            "uppercase": self.uppercase,
            "digits": self.digits,
            "symbols": self.symbols,
        }

    def _pool(self, name: str) -> str:
        return _pool(name, self.symbols_set, self.exclude)

    def classes(self) -> list[str]:
        """The character pools in use: one string per enabled, non-empty class."""
        return list(_classes(self.lowercase, self.uppercase, self.digits, self.symbols,
                             self.symbols_set, self.exclude))  # fmt: skip

    def alphabet(self) -> str:
        """Every character a password may contain."""
        return _alphabet(tuple(self.classes()))


def _pool(name: str, symbols_set: str, exclude: str) -> str:
    chars = {
        "lowercase": string.ascii_lowercase,
        "uppercase": string.ascii_uppercase,
        "digits": string.digits,
        "symbols": symbols_set,
    }[name]
    return "".join(sorted(set(chars) - set(exclude)))


# Worked out once per set of options (every mint and verify asks), keyed on the fields
# themselves: a cache on the model instance would outlive a ``model_copy(update=...)``.
@lru_cache(maxsize=64)
def _classes(
    lowercase: bool, uppercase: bool, digits: bool, symbols: bool, symbols_set: str, exclude: str
) -> tuple[str, ...]:
    enabled = {"lowercase": lowercase, "uppercase": uppercase, "digits": digits, "symbols": symbols}
    pools = (_pool(name, symbols_set, exclude) for name, on in enabled.items() if on)
    return tuple(pool for pool in pools if pool)


@lru_cache(maxsize=64)
def _alphabet(classes: tuple[str, ...]) -> str:
    return "".join(sorted(set("".join(classes))))


def generate(options: RandomPasswordOptions) -> str:
    """A password of ``options.length`` with at least one character of each enabled class."""
    pools = options.classes()
    alphabet = options.alphabet()
    chars = [secrets.choice(pool) for pool in pools]
    chars += [secrets.choice(alphabet) for _ in range(options.length - len(chars))]
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates with the secrets RNG
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def policy_problem(value: Any, options: RandomPasswordOptions) -> str | None:
    """Why ``value`` does not meet the options' policy, or None (never echoes the value)."""
    if not isinstance(value, str):
        return "is not a string"
    if len(value) != options.length:
        return f"has length {len(value)}, expected {options.length}"
    if set(value) - set(options.alphabet()):
        return "contains characters outside the allowed classes"
    if not all(set(value) & set(pool) for pool in options.classes()):
        return "lacks a character of an enabled class"
    return None


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
