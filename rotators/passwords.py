"""Generating passwords, for rotators that set one (the built-in ``random-password``, the database
rotators, plugins): a policy model to put in a rotator's options, and a generator that draws
from :mod:`secrets` only.

    from rotators import PasswordPolicy, generate

    class MyOptions(BaseModel):
        password: PasswordPolicy = PasswordPolicy()   # [rules.options.password] in the file

    new_password = generate(ctx.options.password)
"""

from __future__ import annotations

import secrets
import string
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SYMBOLS = "!#$%&()*+,-.:;<=>?@^_~"


class PasswordPolicy(BaseModel):
    """How a generated password looks: its length and the character classes it draws from.

    Every enabled class is used at least once; ``exclude`` removes characters (e.g. ones that
    are hard to read, or that a target or a connection string cannot take)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=32, ge=12, le=1024)
    lowercase: bool = True
    uppercase: bool = True
    digits: bool = True
    symbols: bool = True
    symbols_set: str = Field(default=DEFAULT_SYMBOLS, min_length=1)
    exclude: str = ""

    @model_validator(mode="after")
    def _usable(self) -> PasswordPolicy:
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


def generate(options: PasswordPolicy) -> str:
    """A password of ``options.length`` with at least one character of each enabled class,
    drawn with :mod:`secrets` only."""
    pools = options.classes()
    alphabet = options.alphabet()
    chars = [secrets.choice(pool) for pool in pools]
    chars += [secrets.choice(alphabet) for _ in range(options.length - len(chars))]
    for i in range(len(chars) - 1, 0, -1):  # Fisher-Yates with the secrets RNG
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def policy_problem(value: Any, options: PasswordPolicy) -> str | None:
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
