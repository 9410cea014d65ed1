"""Example scaivault-rotator plugin: ``example-issuer``, API keys of an HTTP key service.

Strategy ``issuer``: the service holds many keys at once, so the rotation mints a second key,
consumers move to it while the old one keeps working, and ``finalize`` revokes the old one
after the grace period. The secret's data is ``{"key_id": ..., "api_key": ...}`` (any other
field is kept); the rotator acts as the service's admin, with a token it reads from ScaiVault
at the rule's ``admin_secret_path``.

- ``mint``: create a key with ``Idempotency-Key: <rotation_id>``: the service answers the same
  key for the same rotation, so a retry or a resumed rotation never leaves a second key
  behind. It notes the key's id and when it was minted (``ctx.notes``, no secret).
- ``verify``: ``GET /v1/whoami`` with the new key. A 401 for the key this rotation minted,
  within ``propagation_timeout`` of minting it, is propagation (``TransientError``); any other
  401 is final (``CredentialRejected``).
- ``finalize``: revoke the old key (already gone is success); never the new one.
- ``discard``: revoke a key this rotation minted, only that one (the service says which
  rotation's idempotency key created it).
- ``preflight``: read only: the admin token works and the current key exists.

The HTTP calls and their errors live in :mod:`example_issuer.client`; a fake key service for
tests and a local stack in :mod:`example_issuer.fake`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from example_issuer.client import KeyService
from rotators import (
    CredentialRejected,
    PermanentError,
    RotationContext,
    Rotator,
    Secret,
    SecretData,
    TransientError,
)

#: ``ctx.notes`` names: the key this rotation minted, and when (ISO time, the engine's clock).
NOTE_KEY_ID = "key_id"
NOTE_MINTED_AT = "minted_at"


class IssuerOptions(BaseModel):
    """Routing-file options (``[rules.options]``); unknown keys are refused when config loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="Base URL of the key service, e.g. https://keys.example")
    admin_secret_path: str = Field(
        description='ScaiVault path of {"token": ...}, the key service admin token'
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per HTTP call")
    propagation_timeout: float = Field(
        default=30.0, ge=0, description="Seconds a new key may be refused while it propagates"
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")


Context = RotationContext[IssuerOptions]


class ApiKeyIssuer(Rotator[IssuerOptions]):
    """Rotates ``{"key_id", "api_key"}`` at an HTTP key service."""

    name = "example-issuer"
    strategy = "issuer"
    Options = IssuerOptions
    can_discard = True
    verify_timeout = 30.0

    def mint(self, ctx: Context) -> dict[str, Any]:
        with self._admin(ctx) as service:
            key = service.create(idempotency_key=ctx.rotation_id)
        if ctx.notes.get(NOTE_KEY_ID) != key.id:
            ctx.notes.put(NOTE_KEY_ID, key.id)
            ctx.notes.put(NOTE_MINTED_AT, ctx.clock().isoformat())
        ctx.log.info("api_key_minted", key_id=key.id)
        return {**ctx.current.data, "key_id": key.id, "api_key": key.secret.reveal()}

    def verify(self, ctx: Context, new: SecretData) -> None:
        key_id, api_key = _pair(new)
        with KeyService(ctx.options.base_url, None, ctx.options.timeout) as service:
            seen = service.whoami(api_key)
        if seen == key_id:
            ctx.log.info("api_key_verified", key_id=key_id)
            return
        if seen is not None:
            raise PermanentError(f"the service says this api_key is key {seen}, not {key_id}")
        if self._propagating(ctx, key_id):
            raise TransientError(f"the service does not accept key {key_id} yet (401)")
        raise CredentialRejected(f"the service refuses key {key_id} (401)")

    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        old_id, _ = _pair(old)
        new_id, _ = _pair(new)
        if old_id == new_id:
            raise PermanentError("old and new key_id are the same: the key in use stays")
        with self._admin(ctx) as service:
            revoked = service.revoke(old_id)
        ctx.log.info("api_key_revoked", key_id=old_id, already_gone=not revoked)

    def discard(self, ctx: Context, new: SecretData) -> None:
        key_id, _ = _pair(new)
        with self._admin(ctx) as service:
            key = service.get(key_id)
            if key is None:
                return  # already gone
            if key.idempotency_key != ctx.rotation_id:
                raise PermanentError(f"key {key_id} was not minted by this rotation; not revoked")
            service.revoke(key_id)
        ctx.log.info("api_key_discarded", key_id=key_id)

    def preflight(self, ctx: Context) -> None:
        key_id, _ = _pair(ctx.current.data)
        with self._admin(ctx) as service:
            if service.get(key_id) is None:
                raise PermanentError(
                    f"the key service has no key {key_id} (the current one in ScaiVault): "
                    "store a key the service issued"
                )

    # --- helpers ----------------------------------------------------------------------------

    @contextmanager
    def _admin(self, ctx: Context) -> Iterator[KeyService]:
        """A client acting as the service's admin (its token read from ScaiVault)."""
        path = ctx.options.admin_secret_path
        if path.strip("/") == ctx.path.strip("/"):
            raise PermanentError("admin_secret_path is the secret being rotated")
        token = ctx.vault.read(path).data.get("token")
        if not isinstance(token, str) or not token:
            raise PermanentError(f"the secret at {path!r} has no 'token' field")
        with KeyService(ctx.options.base_url, Secret(token), ctx.options.timeout) as service:
            yield service

    def _propagating(self, ctx: Context, key_id: str) -> bool:
        """Whether ``key_id`` is the key this rotation minted, minted too recently to be known
        everywhere (so a 401 may pass)."""
        minted_at = ctx.notes.get(NOTE_MINTED_AT)
        if ctx.notes.get(NOTE_KEY_ID) != key_id or minted_at is None:
            return False
        age = ctx.clock() - datetime.fromisoformat(minted_at)
        return age < timedelta(seconds=ctx.options.propagation_timeout)


def _pair(data: Any) -> tuple[str, Secret]:
    """``data``'s key id and secret, or PermanentError naming the missing field."""
    key_id, api_key = data.get("key_id"), data.get("api_key")
    if not isinstance(key_id, str) or not isinstance(api_key, str):
        raise PermanentError("the secret's data needs string fields 'key_id' and 'api_key'")
    return key_id, Secret(api_key)
