"""Writing a version back to ScaiVault with check-and-set, and settling a write whose answer
was lost or came late.

Every write of the engine carries ``options.cas = N`` (the version it read), so it can only
ever create version N+1. A write whose answer was lost or arrived after the read timeout may
still land: it is sent again, unchanged (at most one of the two can land), and a refusal is
settled by reading version N+1 back: it is provably ours (it carries our mark) or provably
someone else's. Past the task's budget the outcome stays unknown:
:class:`~orchestrator.errors.WriteOutcomeUnknown` (transient) keeps the run where it is for its
next attempt, and nothing is discarded meanwhile. A permanent refusal while settling (the
re-send or a read-back denied, a token withdrawn) does not make the first write's outcome any
less unknown, so it too becomes :class:`~orchestrator.errors.WriteOutcomeUnknown`: a permanent
error would have the minted credential discarded while that write may still land.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.backoff import backoff
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import (
    NeedsAttention,
    NotFound,
    VaultPermanentError,
    VersionConflict,
    WriteOutcomeUnknown,
)
from rotators.contract import SecretVersion


@dataclass(frozen=True)
class Written:
    """Version N+1 as stored for us; ``data`` when it was read back (an earlier attempt's write
    may be the one that landed), None when this write was answered."""

    version: int
    data: dict[str, Any] | None


@dataclass(frozen=True)
class Write:
    """One check-and-set write: ``data`` on top of ``current`` (version N), marked as ours by
    ``metadata[mark]``."""

    current: SecretVersion
    data: Mapping[str, Any]
    metadata: dict[str, Any]
    mark: str

    @property
    def ours(self) -> int:
        """The only version this write can create."""
        return self.current.version + 1

    def is_ours(self, version: SecretVersion) -> bool:
        return bool(version.metadata.get(self.mark) == self.metadata[self.mark])


class WriteBack:
    """Writes versions back with check-and-set and settles unknown outcomes."""

    def __init__(self, runtime: Runtime, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rt = runtime
        self._sleep = sleep

    def write(self, write: Write, *, sent_before: bool = False, **about: Any) -> Written | None:
        """Store ``write``; return what was stored as N+1 for us, or ``None`` when N+1 is
        provably someone else's. ``sent_before``: an earlier attempt of the run sent a write
        (it may still land), so the outcome is unknown from the start. ``about`` goes on the
        log lines."""
        deadline = self.rt.guard.deadline or (
            time.monotonic() + self.rt.settings.scaivault_retry_deadline
        )
        attempt = 0
        path = write.current.path
        unknown: WriteOutcomeUnknown | None = None
        if sent_before:
            unknown = WriteOutcomeUnknown(
                "an earlier attempt's write may still land", code="earlier_write", path=path
            )
        while True:
            attempt += 1
            try:
                version = self.rt.vault.write(
                    path, write.data, cas=write.current.version,
                    secret_type=write.current.secret_type, metadata=write.metadata,
                )  # fmt: skip
                return Written(version, None)
            except WriteOutcomeUnknown as exc:
                unknown = exc
            except VersionConflict:
                return self._settled(write, unknown, **about)
            except VaultPermanentError as exc:
                if unknown is None:
                    raise
                raise self._still_unknown(write, exc, **about) from exc
            remaining = deadline - time.monotonic()
            self.rt.log.warning("store_outcome_unknown", path=path, settling=remaining > 0, **about)
            if remaining <= 0:
                raise unknown
            self._sleep(min(backoff(attempt, base=0.25, cap=5.0, jitter=0), remaining))

    def _settled(
        self, write: Write, unknown: WriteOutcomeUnknown | None, **about: Any
    ) -> Written | None:
        """After a refusal: whose N+1 is; when an earlier send's outcome was unknown, a
        permanent error reading it back leaves that outcome unknown."""
        try:
            return self._after_conflict(write, **about)
        except VaultPermanentError as exc:
            if unknown is None:
                raise
            raise self._still_unknown(write, exc, **about) from exc

    def _still_unknown(
        self, write: Write, exc: VaultPermanentError, **about: Any
    ) -> WriteOutcomeUnknown:
        path = write.current.path
        self.rt.log.warning("store_outcome_unsettled", path=path, code=exc.code, **about)
        return WriteOutcomeUnknown(
            f"the write of version {write.ours} may still land, and settling it was refused "
            f"({exc.code}); nothing was discarded",
            code=exc.code,
            status=exc.status,
            path=path,
        )

    def _after_conflict(self, write: Write, **about: Any) -> Written | None:
        """A write of ours was refused: version N+1 exists. Whose is it?"""
        path = write.current.path
        try:
            written = self.rt.vault.read(path, write.ours)
        except NotFound:  # pruned already: the current version may still tell
            latest = self.rt.vault.read(path)
            if write.is_ours(latest):
                return Written(latest.version, dict(latest.data))
            raise NeedsAttention(
                f"the secret changed while storing version {write.ours} and that version can "
                "no longer be read, so whether ours landed is unknown; nothing was discarded"
            ) from None
        if not write.is_ours(written):
            return None
        self.rt.log.info("version_already_stored", path=path, version=write.ours, **about)
        return Written(write.ours, dict(written.data))
