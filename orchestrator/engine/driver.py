"""Drives a leased rotation from reading version N to grace, checking before acting
(docs/architecture.md#the-protocol).

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
from orchestrator.engine.credential import Minter
from orchestrator.engine.failures import Failures
from orchestrator.engine.runtime import Runtime
from orchestrator.engine.writeback import Write, WriteBack
from orchestrator.errors import (
    IllegalTransition,
    LeaseLost,
    NeedsAttention,
)
from orchestrator.state import metrics
from orchestrator.state.records import PRE_GRACE, RunRecord, RunState
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData
from rotators.versions import ROTATED_BY, parse_time, version_metadata

__all__ = ["ROTATED_BY", "Driver", "Read", "parse_time"]

#: States a run may store from: after verify (issuers, updaters), and for a vault-only run
#: also from queued, or from minting or storing left by an earlier attempt.
_VERIFIED = frozenset({RunState.VERIFYING})
_VAULT_ONLY_PRE_STORE = PRE_GRACE - {RunState.APPLYING}


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
        failures: Failures,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures
        self.writeback = WriteBack(runtime, sleep)

    def run(
        self, record: RunRecord, rotator: Rotator, owner: str, read: Read | None = None
    ) -> RunRecord | None:
        """Run the steps of ``record`` as far as they go now (grace, or an exception).

        ``record`` is the run as this worker leased it; ``read``, a read of the secret this
        task made just before it created the run (a resumed run reads it again). Returns the
        run in grace, or None when it ended otherwise.
        """
        if read is None:
            with self.rt.runs.timed(record, "read"):
                current = self.rt.vault.read(record.path)
        else:
            current = read.current
            self.rt.runs.step_done(record, "read", read.seconds)
        if current.version != record.from_version:
            return self._resume_or_refuse(record, owner, current)
        ctx = self.minter.load_context(record, current)
        new = self.minter.obtain(record, rotator, ctx, owner)
        try:
            return self._store(record, rotator, ctx, current, new, owner)
        except PermanentError:  # never stored: revoke an issuer's unused credential
            self.minter.discard_unused(rotator, ctx, new)
            raise
        except (IllegalTransition, LeaseLost):  # a cancel also drops the lease
            self.minter.discard_if_cancelled(record.rotation_id, rotator, ctx, new)
            raise

    def _resume_or_refuse(self, record: RunRecord, owner: str, current: SecretVersion) -> RunRecord:
        """The current version is not the one rotated from: ours (go to grace) or theirs."""
        if current.metadata.get("rotation_id") == record.rotation_id:
            return self._enter_grace(record, owner, current.version)
        if self.rt.runs.may_be_applied(record.rotation_id):
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
        sent_before = record.write_sent  # an earlier attempt's write may still land
        # Only a vault-only run may come straight from queued (its mint and verify change no
        # state); any other must have verified first. The state machine alone allows both.
        before = _VERIFIED if rotator.capabilities.touches_target else _VAULT_ONLY_PRE_STORE
        record = self.rt.runs.transition(
            record, "storing", expect=before, owner=owner, step="store"
        )
        grace = self._grace(record)
        metadata = version_metadata(
            current.metadata,
            rotation_id=rid,
            rotator=rotator.name,
            previous_version=current.version,
            # Not before (Redis's clock, as the storing transition saw it): the run's own due
            # time is counted again once the version is stored.
            finalize_after=_moment(record.updated_at) + grace,
            grace_period=record.grace_period or self.rt.settings.rotator_default_grace,
            event_id=record.event_id,
        )
        write = Write(current, new, metadata, mark="rotation_id")
        with self.rt.runs.timed(record, "store"):
            stored = self.writeback.write(write, sent_before=sent_before, rotation_id=rid)
        if stored is None:
            self._abandon(record, rotator, ctx, new, owner, write.ours)
            return None
        if stored.data is not None and rotator.capabilities.issues and stored.data != dict(new):
            self.minter.discard(rotator, ctx, new)  # an earlier attempt's value was stored
        return self._enter_grace(record, owner, stored.version)

    def _grace(self, record: RunRecord) -> timedelta:
        return parse_duration(record.grace_period or self.rt.settings.rotator_default_grace)

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
        if rotator.capabilities.in_place:
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
        # A fact about ScaiVault already: record it before the state says "grace" (the recorder
        # sends it ahead of the transition), so whoever watches the state and then reads the
        # history finds it. The outcome is counted by the transition itself: once per run, even
        # when a worker that lost its lease got this far too.
        self.rt.runs.history(record, "rotation_stored", state="grace", outcome="stored",
                             from_version=record.from_version, new_version=version)  # fmt: skip
        stored = self.rt.runs.transition(
            record,
            "grace",
            expect=PRE_GRACE,
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


def _moment(text: str) -> datetime:
    """A run record's ISO 8601 time (the store writes each one; a record without one is
    corrupt, and storing from it must stop)."""
    moment = parse_time(text)
    if moment is None:
        raise ValueError("a run record's time is not ISO 8601")
    return moment
