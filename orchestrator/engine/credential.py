"""The new value of a rotation: mint it (updaters: seal and apply it), verify it, or discard it.

A resumed rotation never mints twice when a sealed value is held: it unseals that value and
goes on from there. A value the target rejects is discarded and another one minted, up to the
rotator's ``max_mint_attempts``; an issuer's unused credential is revoked (``discard``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from orchestrator.engine.notes import RunNotes
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.seal import Sealer
from orchestrator.errors import (
    ConfigError,
    IllegalTransition,
    LeaseLost,
    NeedsAttention,
    reason_of,
)
from orchestrator.state.records import RunRecord
from orchestrator.state.transition import Sealed
from orchestrator.vault.client import VaultClient
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import CredentialRejected, PermanentError, TransientError
from rotators.secret import SecretData

if TYPE_CHECKING:
    from orchestrator.engine.failures import Failures


class ReadOnlyVault:
    """The :class:`~rotators.VaultReader` handed to rotators: ``read`` and nothing else."""

    def __init__(self, vault: VaultClient) -> None:
        self._vault = vault

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        return self._vault.read(path, version)


class Minter:
    """Obtains a verified new value for a leased rotation and cleans up one left unused."""

    def __init__(
        self,
        runtime: Runtime,
        sealer: Sealer | None,
        sleep: Any = time.sleep,
        failures: Failures | None = None,
    ) -> None:
        self.rt = runtime
        self.failures = failures
        self.sealer = sealer
        self._sleep = sleep

    def load_context(
        self, record: RunRecord, current: SecretVersion | None = None
    ) -> RotationContext:
        """The :class:`RotationContext` for ``record`` (``current`` = the version rotated from;
        read from ScaiVault when not given). Options come from the routing file only; the
        rotator's notes are written under the lease ``record`` was taken with."""
        rule = self.rt.routing.match(record.path)
        if rule is None:
            raise ConfigError(f"no rule in the routing file matches {record.path!r}")
        if current is None:
            current = self.rt.vault.read(record.path, record.from_version)
        return RotationContext(
            path=record.path,
            rotation_id=record.rotation_id,
            current=current,
            options=rule.options,
            log=self.rt.log.bind(
                rotation_id=record.rotation_id, path=record.path, rotator=rule.rotator
            ),
            vault=ReadOnlyVault(self.rt.vault),
            attempt=max(record.attempts, 1),
            notes=RunNotes(record, self.rt.runs, record.lease_owner),
            clock=self.rt.runs.now,
        )

    def obtain(
        self, record: RunRecord, rotator: Rotator, ctx: RotationContext, owner: str
    ) -> SecretData:
        """A verified new value: the sealed one if an updater already minted, else mint.

        ``record`` is the run as this worker leased it (only the lease holder changes it).
        """
        rid = record.rotation_id
        sealed = self.rt.runs.sealed(rid) if record.sealed else None
        if sealed is not None:
            new = self._require_sealer().unseal(sealed, context=rid)
            self.rt.log.info("rotation_resumed_sealed", rotation_id=rid, path=record.path)
            if rotator.capabilities.in_place:
                self._apply(record, rotator, ctx, new, owner, resumed=True)
            self._verify_step(record, rotator, ctx, new, owner)
            return new
        while True:
            if record.mint_attempts >= rotator.max_mint_attempts:
                raise PermanentError(
                    f"the target rejected {record.mint_attempts} minted values in a row",
                    step="mint",
                )
            if rotator.capabilities.touches_target:
                record = self.rt.runs.transition(record, "minting", owner=owner, step="mint")
            self.rt.guard.check(rid, "mint")
            with self.rt.runs.timed(record, "mint"):
                new = SecretData(rotator.mint(ctx))
            try:
                self._seal_apply_verify(record, rotator, ctx, new, owner)
                return new
            except CredentialRejected as exc:
                self.rt.runs.history(record, "value_rejected", step=exc.step, detail=reason_of(exc))
                self.discard_unused(rotator, ctx, new)
                rejected = record.mint_attempts + 1  # counts rejections only, not crashes
                record = self.rt.runs.update(
                    record, owner=owner, sealed=None, mint_attempts=rejected
                )
            except (PermanentError, NeedsAttention):
                self.discard_unused(rotator, ctx, new)
                raise
            except (IllegalTransition, LeaseLost):  # a cancel also drops the lease
                self.discard_if_cancelled(rid, rotator, ctx, new)
                raise

    def verify(self, rotator: Rotator, ctx: RotationContext, new: SecretData) -> None:
        """Call ``rotator.verify``, retrying transient errors up to ``rotator.verify_timeout``.

        Propagation delay shows as :class:`TransientError`; the last one is re-raised when the
        time is up (or the task's wait budget is: it retries later instead of being killed at
        its time limit). :class:`CredentialRejected` and permanent errors pass straight through.
        """
        deadline = time.monotonic() + rotator.verify_timeout
        if self.rt.guard.deadline is not None:
            deadline = min(deadline, self.rt.guard.deadline)
        delay = 0.2
        while True:
            try:
                rotator.verify(ctx, new)
                return
            except TransientError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                wait = min(max(delay, exc.retry_after or 0.0), remaining)
                ctx.log.info("verify_retry", step="verify", wait=round(wait, 2))
                self._sleep(wait)
                delay = min(delay * 2, 5.0)

    def discard(
        self, rotator: Rotator, ctx: RotationContext, new: SecretData, cancelled: bool = False
    ) -> None:
        """Revoke an unused new value (``rotator.discard``); a failure is logged, not raised,
        and a credential that stays valid is recorded as a stray for on-call. Only an
        issuer's value is a credential at the target (a vault-only value exists nowhere else).
        A ``cancelled`` run's lease is gone, yet no other worker will drive it: revoke anyway."""
        if not rotator.capabilities.issues:
            return
        if not rotator.can_discard:
            self._stray(ctx, f"rotator {rotator.name} cannot revoke it")
            return
        try:
            if not cancelled:
                self.rt.guard.check(ctx.rotation_id, "discard")
            rotator.discard(ctx, new)
        except LeaseLost:
            return  # another worker drives the run now: it decides what becomes of the value
        except Exception as exc:
            reason = reason_of(exc)
            self.rt.log.error(
                "discard_failed",
                rotation_id=ctx.rotation_id,
                path=ctx.path,
                rotator=rotator.name,
                reason=reason,
            )
            self._stray(ctx, f"revoking it failed: {reason}")
            return
        record = self.rt.runs.get(ctx.rotation_id)  # revoked: a failure here is not the revoke's
        if record is not None:
            self.rt.runs.history(record, "credential_withdrawn", detail="revoked unused")

    def _stray(self, ctx: RotationContext, why: str) -> None:
        record = self.rt.runs.get(ctx.rotation_id)
        if self.failures is not None and record is not None:
            detail = (
                f"an unused new credential of rotation {ctx.rotation_id} is still valid at the "
                f"target ({why}); revoke it by hand"
            )
            self.failures.stray(record, detail)

    def discard_if_cancelled(
        self, rotation_id: str, rotator: Rotator, ctx: RotationContext, new: SecretData
    ) -> None:
        """On-call cancelled the run after we minted: revoke an issuer's unused credential.

        Only a run that never entered ``storing``: from then on a write of the value may land
        in ScaiVault late (cancel refuses such a run; checked here again, as this worker may
        have lost its lease long ago)."""
        record = self.rt.runs.get(rotation_id)
        if (
            rotator.capabilities.issues
            and record is not None
            and record.state == "cancelled"
            and not record.write_sent
        ):
            self.discard(rotator, ctx, new, cancelled=True)
            self.rt.runs.update(record, sealed=None)

    def discard_unused(self, rotator: Rotator, ctx: RotationContext, new: SecretData) -> None:
        """An issuer's value that will not be stored is revoked; an updater's is left alone
        (it may already be in use: the sealed copy and the target decide)."""
        if not rotator.capabilities.in_place:
            self.discard(rotator, ctx, new)

    def _seal_apply_verify(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        new: SecretData,
        owner: str,
    ) -> None:
        caps = rotator.capabilities
        in_place = caps.in_place
        seal = None  # kept by the next state change, before the value is applied or verified
        # A resume reuses a sealed value instead of minting another: an updater's may be in use
        # already, an issuer's is a credential at the target. A vault-only value exists nowhere
        # until it is stored, so it is not kept (minting again costs nothing).
        if in_place or (self.sealer is not None and caps.issues):
            blob = self._require_sealer().seal(new, context=record.rotation_id)
            seal = Sealed(blob, in_place)
        if in_place:
            self._apply(record, rotator, ctx, new, owner, resumed=False, seal=seal)
            seal = None
        self._verify_step(record, rotator, ctx, new, owner, seal)

    def _apply(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        new: SecretData,
        owner: str,
        *,
        resumed: bool,
        seal: Sealed | None = None,
    ) -> None:
        rid = record.rotation_id
        self.rt.runs.transition(record, "applying", owner=owner, step="apply", seal=seal)
        try:
            self.rt.guard.check(rid, "apply")
            with self.rt.runs.timed(record, "apply"):
                rotator.apply(ctx, new)
        except CredentialRejected as exc:
            if resumed:
                raise NeedsAttention(
                    f"the target rejects the sealed new value on resume ({reason_of(exc)}); "
                    "it may be half-applied"
                ) from None
            # Refused before it took effect: drop the sealed value and mint another.
            self.rt.runs.transition(record, "minting", owner=owner, step="mint", sealed=None)
            exc.step = exc.step or "apply"
            raise

    def _verify_step(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        new: SecretData,
        owner: str,
        seal: Sealed | None = None,
    ) -> None:
        if seal is not None or rotator.capabilities.touches_target:
            self.rt.runs.transition(record, "verifying", owner=owner, step="verify", seal=seal)
        try:
            with self.rt.runs.timed(record, "verify"):
                self.verify(rotator, ctx, new)
        except CredentialRejected as exc:
            if rotator.capabilities.in_place:
                raise NeedsAttention(
                    f"the target took the new value but verify rejects it ({reason_of(exc)})"
                ) from None
            exc.step = exc.step or "verify"
            raise

    def _require_sealer(self) -> Sealer:
        if self.sealer is None:
            raise ConfigError(
                "ROTATOR_SEAL_KEY is not set: updater rotators refuse to run without it"
            )
        return self.sealer
