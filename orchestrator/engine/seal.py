"""Sealing: authenticated encryption of a minted secret value kept in the run record.

An updater changes the only working credential in place, so the engine seals the minted value
into Redis *before* ``apply``; a worker that resumes after a crash unseals it and stores the
value the target already has. Fernet (AES-128-CBC + HMAC-SHA256) with ``ROTATOR_SEAL_KEY``:
the first key seals, every listed key unseals, so keys can be rotated. An optional ``context``
(the rotation id) is bound into the sealed text, so a blob copied into another run refuses to
open there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from orchestrator.errors import SealError
from rotators.secret import SecretData

if TYPE_CHECKING:
    from orchestrator.settings import Settings

_FORMAT = 1


class Sealer:
    """Seals and unseals secret data with a list of Fernet keys (first seals, all unseal)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SealError("no seal key: set ROTATOR_SEAL_KEY to one or more Fernet keys")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            raise SealError(
                "a seal key is not a Fernet key (url-safe base64 of 32 random bytes)"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        """A sealer over ``ROTATOR_SEAL_KEY``; raises ``ConfigError`` when it is not set."""
        return cls(settings.require_seal_keys())

    def seal(self, data: Mapping[str, Any], *, context: str | None = None) -> str:
        """Encrypt ``data`` (JSON-serialisable) into an opaque ASCII token."""
        plain = {"v": _FORMAT, "ctx": context, "data": dict(data)}
        return self._fernet.encrypt(json.dumps(plain).encode()).decode("ascii")

    def unseal(self, token: str, *, context: str | None = None) -> SecretData:
        """Decrypt a token from :meth:`seal`; ``context`` must equal the one it was sealed with."""
        try:
            plain = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, UnicodeError, ValueError):
            raise SealError(
                "the sealed value cannot be opened with any ROTATOR_SEAL_KEY: it was sealed "
                "with a key that is no longer listed, or it was altered; add the old key back "
                "to ROTATOR_SEAL_KEY (after the new one)"
            ) from None
        if not isinstance(plain, dict) or plain.get("v") != _FORMAT:
            raise SealError("the sealed value has an unknown format")
        if plain.get("ctx") != context:
            raise SealError("the sealed value belongs to another rotation; refusing to use it")
        return SecretData(plain["data"])

    def __repr__(self) -> str:
        return "Sealer(keys=[REDACTED])"
