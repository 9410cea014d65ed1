"""Test-only rotators whose target is a credential ledger in a Redis database of the test's own.

The ledger knows credentials only by SHA-256 fingerprint (like a real system stores hashes), so
no secret value ever lands in Redis through it and the sentinel scans stay meaningful.

- ``test-ledger`` (issuer): ``mint`` registers a new credential as ``active`` (the old one stays
  valid), ``verify`` checks it is ``active``, ``finalize`` revokes the old one, ``discard`` the
  new one. ``reject_first`` makes ``verify`` refuse the first N values it sees (a "policy").
- ``test-ledger-updater`` (updater): the target holds *one* current credential; ``apply``
  replaces it (checking first), ``verify`` checks the target's current one is ours.

Both call :class:`tests.rotators.hook.StepHook` at ``mint``, ``apply``, ``verify`` and
``finalize`` so a crash test can hold a worker inside a step and SIGKILL it there.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import redis
from pydantic import BaseModel, ConfigDict, Field

from rotators import CredentialRejected, PermanentError, RotationContext, Rotator, SecretData
from tests.rotators.hook import StepHook


class LedgerOptions(BaseModel):
    """Routing-file options of the ledger rotators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_url: str
    field: str = "password"
    signal_url: str | None = None
    hold: list[str] = Field(default_factory=list)
    reject_first: int = 0
    busy_ms: int = 0


def busy_key(name: str) -> str:
    """String: how many steps act on the ledger now (``busy_ms`` set); ``<name>:peak`` is a
    sorted set whose member ``peak`` holds the most ever seen at once."""
    return f"ledger:busy:{name}"


def fingerprint(value: str) -> str:
    """How the ledger names a credential: its SHA-256."""
    return hashlib.sha256(value.encode()).hexdigest()


def creds_key(path: str) -> str:
    """Hash: fingerprint -> ``active``/``revoked`` (issuer target)."""
    return f"ledger:{path}:creds"


def minted_key(path: str, rotation_id: str) -> str:
    """Set: fingerprints the issuer minted for one rotation (its idempotency tag)."""
    return f"ledger:{path}:minted:{rotation_id}"


def current_key(path: str) -> str:
    """String: fingerprint of the one current credential (updater target)."""
    return f"ledger:{path}:current"


def _options(ctx: RotationContext) -> LedgerOptions:
    if isinstance(ctx.options, LedgerOptions):
        return ctx.options
    return LedgerOptions.model_validate(ctx.options.model_dump())


class _Ledger(Rotator):
    """Shared parts: options, the target connection, the hook."""

    Options: ClassVar[type[BaseModel]] = LedgerOptions
    verify_timeout: ClassVar[float] = 3.0

    def _target(self, ctx: RotationContext) -> redis.Redis:
        return redis.Redis.from_url(_options(ctx).target_url, decode_responses=True)

    def _reach(self, ctx: RotationContext, point: str) -> None:
        options = _options(ctx)
        StepHook(options.signal_url, options.hold).reach(ctx.rotation_id, point)

    @contextmanager
    def _busy(self, ctx: RotationContext) -> Iterator[None]:
        """With ``busy_ms``: count this step as acting on the target (and its peak) and take
        that long, so steps that run at once overlap for sure."""
        options = _options(ctx)
        if not options.busy_ms:
            yield
            return
        with self._target(ctx) as target:
            now = target.incr(busy_key("now"))
            target.zadd(busy_key("peak"), {"peak": now}, gt=True)
            try:
                time.sleep(options.busy_ms / 1000)
                yield
            finally:
                target.decr(busy_key("now"))

    def _value(self, ctx: RotationContext, data: SecretData) -> str:
        return str(data[_options(ctx).field])

    def _new_data(self, ctx: RotationContext) -> dict[str, Any]:
        data = dict(ctx.current.data)
        data[_options(ctx).field] = secrets.token_urlsafe(24)
        return data

    def _maybe_reject(self, ctx: RotationContext, data: SecretData) -> None:
        options = _options(ctx)
        if not options.reject_first:
            return
        with self._target(ctx) as target:
            seen = target.incr(f"ledger:{ctx.path}:verified")
        if int(seen) <= options.reject_first:
            raise CredentialRejected("the target's policy refuses this value", step="verify")


class LedgerIssuer(_Ledger):
    """Issues a second credential; revokes the old one at finalize."""

    name = "test-ledger"
    strategy = "issuer"
    can_discard = True

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        """Check first: a credential an earlier attempt of this rotation minted was never
        handed over (the engine seals what ``mint`` returns and never mints again after
        that), so revoke it; then issue a new one tagged with the rotation id."""
        data = self._new_data(ctx)
        tagged = minted_key(ctx.path, ctx.rotation_id)
        with self._busy(ctx), self._target(ctx) as target:
            for earlier in target.smembers(tagged):
                target.hset(creds_key(ctx.path), earlier, "revoked")
            new_fp = fingerprint(data[_options(ctx).field])
            target.sadd(tagged, new_fp)
            target.hset(creds_key(ctx.path), new_fp, "active")
            self._reach(ctx, "mint")
        return data

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        self._reach(ctx, "verify")
        self._maybe_reject(ctx, new)
        with self._busy(ctx), self._target(ctx) as target:
            state = target.hget(creds_key(ctx.path), fingerprint(self._value(ctx, new)))
        if state != "active":
            raise PermanentError(f"the target says the new credential is {state or 'unknown'}")

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        self._reach(ctx, "finalize")
        with self._busy(ctx), self._target(ctx) as target:
            target.hset(creds_key(ctx.path), fingerprint(self._value(ctx, old)), "revoked")

    def discard(self, ctx: RotationContext, new: SecretData) -> None:
        with self._target(ctx) as target:
            target.hset(creds_key(ctx.path), fingerprint(self._value(ctx, new)), "revoked")


class LedgerUpdater(_Ledger):
    """Changes the target's one credential in place."""

    name = "test-ledger-updater"
    strategy = "updater"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        data = self._new_data(ctx)
        self._reach(ctx, "mint")
        return data

    def apply(self, ctx: RotationContext, new: SecretData) -> None:
        wanted = fingerprint(self._value(ctx, new))
        with self._target(ctx) as target:
            if target.get(current_key(ctx.path)) != wanted:  # check, then act
                target.set(current_key(ctx.path), wanted)
        self._reach(ctx, "apply")

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        self._reach(ctx, "verify")
        with self._target(ctx) as target:
            current = target.get(current_key(ctx.path))
        if current != fingerprint(self._value(ctx, new)):
            raise CredentialRejected("the target's credential is not the new one", step="verify")
