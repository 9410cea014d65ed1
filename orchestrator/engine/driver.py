"""Drives a leased rotation from reading version N to grace (DESIGN §6), checking before acting.

::

    read N -> mint (updaters: seal, apply) -> verify -> store N+1 with options.cas=N -> grace

A resumed rotation re-reads ScaiVault first, so work already done is recognised ("already
stored by us" = the current version carries our ``rotation_id``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.duration import parse_duration
from orchestrator.engine.credential import Minter, touches_target
from orchestrator.engine.failures import FailurePolicy
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import (
    IllegalTransition,
    NeedsAttention,
    NotFound,
    VersionConflict,
    WriteOutcomeUnknown,
)
from orchestrator.state import metrics
from orchestrator.state.runs import RunRecord
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData
from rotators.versions import ROTATED_BY, parse_time, version_metadata

__all__ = ["ROTATED_BY", "Driver", "Read", "parse_time"]

#: States a rotation may be in when it enters grace (including "found already stored").
_PRE_GRACE = ("queued", "minting", "applying", "verifying", "storing")
#: States a run may store from: after verify (issuers, updaters), and for a vault-only run
#: also from queued, or from minting or storing left by an earlier attempt.
_VERIFIED = ("verifying",)
_VAULT_ONLY_PRE_STORE = ("queued", "minting", "verifying", "storing")


@dataclass(frozen=True)
class Read:
    """Version N as a task read it just before it created the run, and how long that took."""

    current: SecretVersion
    seconds: float


class Driver:
    """Carries one leased rotation through its steps up to grace."""

    def __init__(
        self,
        runtime: Runtime,
        minter: Minter,
        failures: FailurePolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures
        self._sleep = sleep

    def run(
        self, record: RunRecord, rotator: Rotator, owner: str, read: Read | None = None
    ) -> RunRecord | None:
        """Run the steps of ``record`` as far as they go now (grace, or an exception).

        ``record`` is the run as this worker leased it; ``read``, a read of the secret this
        task made just before it created the run (a resumed run reads it again). Returns the
        run in grace, or None when it ended otherwise.
        """
        if read is None:
            with self.rt.journal.timed(record, "read"):
                current = self.rt.vault.read(record.path)
        else:
            current = read.current
            self.rt.journal.step_done(record, "read", read.seconds)
        if current.version != record.from_version:
            return self._resume_or_refuse(record, owner, current)
        ctx = self.minter.load_context(record, current)
        new = self.minter.obtain(record, rotator, ctx, owner)
        try:
            return self._store(record, rotator, ctx, current, new, owner)
        except PermanentError:  # never stored: revoke an issuer's unused credential
            self.minter.discard_unused(rotator, ctx, new)
            raise
        except IllegalTransition:
            self.minter.discard_if_cancelled(record.rotation_id, rotator, ctx, new)
            raise

    def _resume_or_refuse(self, record: RunRecord, owner: str, current: SecretVersion) -> RunRecord:
        """The current version is not the one rotated from: ours (go to grace) or theirs."""
        if current.metadata.get("rotation_id") == record.rotation_id:
            return self._enter_grace(record, owner, current.version)
        if self.rt.store.may_be_applied(record.rotation_id):
            raise NeedsAttention(
                f"version {current.version} was written by someone else while rotating from "
                f"version {record.from_version}; the target may already use our sealed value"
            )
        raise PermanentError(
            f"version {current.version} is current, but this rotation started from version "
            f"{record.from_version}: someone else rotated the secret; nothing of ours is stored"
        )

    def _store(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        current: SecretVersion,
        new: SecretData,
        owner: str,
    ) -> RunRecord | None:
        rid = record.rotation_id
        # Only a vault-only run may come straight from queued (its mint and verify change no
        # state); any other must have verified first. The state machine alone allows both.
        before = _VERIFIED if touches_target(rotator) else _VAULT_ONLY_PRE_STORE
        record = self.rt.store.transition(rid, "storing", expect=before, owner=owner, step="store")
        grace = self._grace(record)
        metadata = version_metadata(
            current.metadata,
            rotation_id=rid,
            rotator=rotator.name,
            previous_version=current.version,
            # Not before (Redis's clock, as the storing transition saw it): the run's own due
            # time is counted again once the version is stored.
            finalize_after=datetime.fromisoformat(record.updated_at) + grace,
            grace_period=record.grace_period or self.rt.settings.rotator_default_grace,
            event_id=record.event_id,
        )
        with self.rt.journal.timed(record, "store"):
            stored = self._write(record, current, new, metadata)
        if stored is None:
            self._abandon(record, rotator, ctx, new, owner, current.version + 1)
            return None
        if stored.data is not None and rotator.strategy != "updater" and stored.data != dict(new):
            self.minter.discard(rotator, ctx, new)  # an earlier attempt's value was stored
        return self._enter_grace(record, owner, stored.version)

    def _grace(self, record: RunRecord) -> timedelta:
        return parse_duration(record.grace_period or self.rt.settings.rotator_default_grace)

    def _write(
        self,
        record: RunRecord,
        current: SecretVersion,
        new: SecretData,
        metadata: dict[str, object],
    ) -> _Stored | None:
        """PUT version N+1 with ``options.cas = N``; settle a write whose outcome is unknown.

        Returns what was stored as N+1 for this run, or ``None`` when N+1 is provably someone
        else's (every write of ours carries ``cas = N``, so it can only ever create N+1). A
        write whose answer was lost or late may still land: it is sent again, unchanged (at most
        one of the two can land), until N+1 is ours or theirs. Past the task's budget the
        outcome stays unknown: :class:`WriteOutcomeUnknown` (transient) keeps the run in
        ``storing`` for its next attempt, and nothing is discarded meanwhile.
        """
        deadline = self.rt.guard.deadline or (
            time.monotonic() + self.rt.settings.scaivault_retry_deadline
        )
        delay = 0.25
        while True:
            try:
                version = self.rt.vault.write(
                    record.path, new, cas=current.version, secret_type=current.secret_type,
                    metadata=metadata,
                )  # fmt: skip
                return _Stored(version, None)
            except WriteOutcomeUnknown as exc:
                unknown = exc
            except VersionConflict:
                return self._after_conflict(record, current.version + 1)
            remaining = deadline - time.monotonic()
            self.rt.log.warning(
                "store_outcome_unknown",
                rotation_id=record.rotation_id,
                path=record.path,
                settling=remaining > 0,
            )
            if remaining <= 0:
                raise unknown
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    def _after_conflict(self, record: RunRecord, ours: int) -> _Stored | None:
        """A write of ours was refused: version ``ours`` (N+1) exists. Whose is it?"""
        try:
            written = self.rt.vault.read(record.path, ours)
        except NotFound:  # pruned already: the current version may still tell
            latest = self.rt.vault.read(record.path)
            if latest.metadata.get("rotation_id") == record.rotation_id:
                return _Stored(latest.version, dict(latest.data))
            raise NeedsAttention(
                f"the secret changed while storing version {ours} and that version can no longer "
                "be read, so whether ours landed is unknown; nothing was discarded"
            ) from None
        if written.metadata.get("rotation_id") != record.rotation_id:
            return None
        self.rt.log.info("rotation_already_stored", rotation_id=record.rotation_id, version=ours)
        return _Stored(ours, dict(written.data))

    def _abandon(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        new: SecretData,
        owner: str,
        theirs: int,
    ) -> None:
        """Someone else wrote version N+1 first: ours can never be stored."""
        reason = (
            f"CAS conflict: version {theirs} was written by someone else while rotating from "
            f"version {record.from_version} (version_conflict)"
        )
        if rotator.strategy == "updater":
            reason += "; the target may already use our sealed value: decide, then retry"
            self.failures.fail(record.rotation_id, "needs_attention", reason, owner, step="store")
            return
        self.minter.discard(rotator, ctx, new)
        self.failures.fail(record.rotation_id, "failed", reason, owner, step="store")

    def _enter_grace(self, record: RunRecord, owner: str, version: int) -> RunRecord:
        """Grace: the state and the due-queue entry that finalizes it, in one atomic step.

        The whole grace period counts from now, on Redis's clock: the new version is readable
        by now (stored by this attempt or found stored), so consumers get all of it.
        """
        # A fact about ScaiVault already: record it before the state says "grace" (the journal
        # sends it ahead of the transition), so whoever watches the state and then reads the
        # history finds it. The outcome is counted by the transition itself: once per run, even
        # when a worker that lost its lease got this far too.
        self.rt.journal.history(record, "rotation_stored", state="grace", outcome="stored",
                             from_version=record.from_version, new_version=version)  # fmt: skip
        stored = self.rt.store.transition(
            record.rotation_id,
            "grace",
            expect=_PRE_GRACE,
            owner=owner,
            step="grace",
            new_version=version,
            due_in=self._grace(record).total_seconds(),
            count=metrics.outcome_counter(record.rotator or "none", "stored"),
            sealed=None,
            last_error=None,
        )
        self.rt.log.info(
            "rotation_stored",
            rotation_id=stored.rotation_id,
            path=stored.path,
            rotator=stored.rotator,
            new_version=version,
            finalize_after=stored.finalize_after,
        )
        return stored


@dataclass(frozen=True)
class _Stored:
    """Version N+1 as stored for a run; ``data`` when it was read back (an earlier attempt's
    value may be the one stored), None when this attempt's write was answered."""

    version: int
    data: dict[str, object] | None
