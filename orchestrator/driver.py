"""Drives a leased rotation from reading version N to grace (DESIGN §6), checking before acting.

::

    read N -> mint (updaters: seal, apply) -> verify -> store N+1 with options.cas=N -> grace

A resumed rotation re-reads ScaiVault first, so work already done is recognised ("already
stored by us" = the current version carries our ``rotation_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator import metrics
from orchestrator.due import to_ms
from orchestrator.duration import parse_duration
from orchestrator.errors import VaultError, VersionConflict
from orchestrator.failure import FailurePolicy, NeedsAttention
from orchestrator.minter import Minter, touches_target
from orchestrator.runtime import Runtime
from orchestrator.store import IllegalTransition, RunRecord
from rotators.contract import RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError
from rotators.secret import SecretData

#: ``rotated_by`` on every version the engine writes (DESIGN §5).
ROTATED_BY = "scaivault-rotator"
#: States a rotation may be in when it enters grace (including "found already stored").
_PRE_GRACE = ("queued", "minting", "applying", "verifying", "storing")
#: States a run may store from: after verify (issuers, updaters), and for a vault-only run
#: also from queued, or from minting or storing left by an earlier attempt.
_VERIFIED = ("verifying",)
_VAULT_ONLY_PRE_STORE = ("queued", "minting", "verifying", "storing")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from metadata (naive = UTC), or None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Read:
    """Version N as a task read it just before it created the run, and how long that took."""

    current: SecretVersion
    seconds: float


class Driver:
    """Carries one leased rotation through its steps up to grace."""

    def __init__(self, runtime: Runtime, minter: Minter, failures: FailurePolicy) -> None:
        self.rt = runtime
        self.minter = minter
        self.failures = failures

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
            return self._enter_grace(record, owner, current.version, current.metadata)
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
        grace = parse_duration(record.grace_period or self.rt.settings.rotator_default_grace)
        finalize_after = datetime.now(UTC) + grace
        metadata = {
            **current.metadata,
            "rotation_id": rid,
            "rotator": rotator.name,
            "previous_version": current.version,
            "finalize_after": finalize_after.isoformat(timespec="seconds"),
            "rotated_by": ROTATED_BY,
        }
        try:
            with self.rt.journal.timed(record, "store"):
                version = self.rt.vault.write(
                    record.path,
                    new,
                    cas=current.version,
                    secret_type=current.secret_type,
                    metadata=metadata,
                )
        except VersionConflict as exc:
            latest = self.rt.vault.read(record.path)
            if latest.metadata.get("rotation_id") != rid:
                self._abandon(record, rotator, ctx, new, owner, latest.version, exc)
                return None
            self.rt.log.info("rotation_already_stored", rotation_id=rid, version=latest.version)
            if rotator.strategy != "updater" and dict(latest.data) != dict(new):
                self.minter.discard(rotator, ctx, new)  # an earlier attempt's value was stored
            version, metadata = latest.version, latest.metadata
        return self._enter_grace(record, owner, version, metadata)

    def _abandon(
        self,
        record: RunRecord,
        rotator: Rotator,
        ctx: RotationContext,
        new: SecretData,
        owner: str,
        theirs: int,
        exc: VaultError,
    ) -> None:
        """Someone else wrote the secret first: our value is never stored."""
        reason = (
            f"CAS conflict: version {theirs} was written by someone else while rotating from "
            f"version {record.from_version} ({exc.code})"
        )
        if rotator.strategy == "updater":
            reason += "; the target may already use our sealed value: decide, then retry"
            self.failures.fail(record.rotation_id, "needs_attention", reason, owner, step="store")
            return
        self.minter.discard(rotator, ctx, new)
        self.failures.fail(record.rotation_id, "failed", reason, owner, step="store")

    def _enter_grace(
        self, record: RunRecord, owner: str, version: int, metadata: dict[str, Any]
    ) -> RunRecord:
        """Grace: the state and the due-queue entry that finalizes it, in one atomic step."""
        finalize_after = parse_time(metadata.get("finalize_after")) or datetime.now(UTC)
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
            due_ms=to_ms(finalize_after),
            count=metrics.outcome_counter(record.rotator or "none", "stored"),
            finalize_after=finalize_after.isoformat(timespec="seconds"),
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
