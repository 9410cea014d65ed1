"""Wrappers that carry secret values without ever printing them."""

from __future__ import annotations

from typing import Any

REDACTED = "[REDACTED]"


class Secret:
    """One secret string. ``repr``/``str`` never show it; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretData(dict[str, Any]):
    """A secret's ``data`` object: a plain ``dict`` whose ``repr``/``str`` show only its keys.

    It is a real ``dict`` so rotators and JSON encoders use it as one; the redacted ``repr``
    means an accidental f-string, log field or traceback local shows ``SecretData(keys=[...])``.
    """

    def __repr__(self) -> str:
        return f"SecretData(keys={sorted(self)!r})"

    __str__ = __repr__

    def reveal(self) -> dict[str, Any]:
        """Return a plain ``dict`` copy, for the one place that must send the values."""
        return dict(self)
