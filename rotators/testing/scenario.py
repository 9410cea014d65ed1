"""What a plugin author gives the kit: a target that issues credentials, and its scenarios."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel


@dataclass
class Scenario:
    """A fresh credential at the target: the secret's data and the rotator's options for it.

    ``vault_secrets`` are other ScaiVault paths the rotator reads (e.g. an admin credential).
    ``public_fields`` names fields of ``data`` that are not secret and may be logged (e.g. a
    username); every other string value is searched for in logs and exception texts.
    """

    data: Mapping[str, Any]
    options: Mapping[str, Any] | BaseModel
    path: str = "conformance/secret"
    vault_secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    public_fields: frozenset[str] = frozenset()


@runtime_checkable
class Target(Protocol):
    """What a plugin author implements so the kit can judge their rotator."""

    def setup(self) -> Scenario:
        """Create a new credential at the target; return it with the options that reach it."""
        ...

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        """Does the target accept this credential right now?"""
        ...

    # Optional, for rotators that tell who uses a credential (``in_use``):
    # ``def session(self, data) -> ContextManager``: open a session (a connection) that
    # authenticates with ``data`` and keep it open inside the ``with`` block.


def wrong_credential(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` with every string field the rotation changed altered, so it must not work.

    A target may define ``wrong_credential(new)`` itself when this is not wrong enough.
    """
    wrong = dict(new)
    for key, value in new.items():
        if isinstance(value, str) and old.get(key) != value:
            wrong[key] = value + "-wrong"
    return wrong
