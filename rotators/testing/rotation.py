"""The kit's stand-in for the engine: rotation contexts, and one rotation run step by step.

A :class:`Rotation` calls every step on a fresh rotator instance (as a restarted worker
would), keeps one set of notes across its simulated crashes and stores the new version the
way the engine does; :func:`make_context` builds a single step's context for your own tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rotators.contract import MemoryNotes, Notes, RotationContext, Rotator, SecretVersion, Usage
from rotators.errors import TransientError
from rotators.secret import SecretData
from rotators.testing.errors import ConformanceError
from rotators.testing.log import CapturingLog
from rotators.testing.scenario import Scenario
from rotators.testing.vault import MemoryVault
from rotators.versions import version_metadata

if TYPE_CHECKING:
    from rotators.testing.kit import Kit


def make_context(
    rotator: Rotator | type[Rotator],
    vault: MemoryVault,
    path: str,
    options: Mapping[str, Any] | BaseModel,
    *,
    rotation_id: str | None = None,
    attempt: int = 1,
    log: CapturingLog | None = None,
    version: int | None = None,
    notes: Notes | None = None,
) -> RotationContext:
    """A context for ``path``'s current (or given) version, options validated by the rotator.

    Pass the same ``notes`` to every context of one rotation, as the engine keeps them.
    """
    if not isinstance(options, BaseModel):
        options = rotator.Options.model_validate(dict(options))
    return RotationContext(
        path=path,
        rotation_id=rotation_id or f"rot_{uuid.uuid4().hex[:12]}",
        current=vault.read(path, version),
        options=options,
        log=log or CapturingLog(path=path),
        vault=vault,
        attempt=attempt,
        notes=notes if notes is not None else MemoryNotes(),
    )


class Rotation:
    """One rotation as the engine would run it, over a :class:`MemoryVault`."""

    def __init__(self, kit: Kit, scenario: Scenario) -> None:
        self.kit = kit
        self.scenario = scenario
        self.vault = MemoryVault()
        for path, data in scenario.vault_secrets.items():
            self.vault.put(path, data)
        self.from_version = self.vault.put(scenario.path, scenario.data)
        self.stored: SecretVersion | None = None
        self.old = dict(scenario.data)
        self.rotation_id = f"rot_{uuid.uuid4().hex[:12]}"
        self.attempt = 0
        self.notes = MemoryNotes()  # kept across the simulated crashes of this rotation
        kit.notes.append(self.notes)
        kit.public_fields = scenario.public_fields
        kit.remember(self.old)
        for data in scenario.vault_secrets.values():
            kit.remember(data)

    def ctx(self, version: int | None = None) -> RotationContext:
        self.attempt += 1
        return make_context(
            self.kit.factory(),
            self.vault,
            self.scenario.path,
            self.scenario.options,
            rotation_id=self.rotation_id,
            attempt=self.attempt,
            log=self.kit.log,
            version=version or self.from_version.version,
            notes=self.notes,
        )

    def mint(self) -> dict[str, Any]:
        with self.kit.step("mint"):
            new = dict(self.kit.factory().mint(self.ctx()))
        self.kit.remember(new)
        return new

    def apply(self, new: Mapping[str, Any]) -> None:
        rotator = self.kit.factory()
        if rotator.strategy == "updater":
            with self.kit.step("apply"):
                rotator.apply(self.ctx(), SecretData(new))

    def verify(self, new: Mapping[str, Any]) -> None:
        """Call verify, retrying TransientError for up to the kit's ``verify_timeout``."""
        deadline = time.monotonic() + self.kit.verify_timeout
        while True:
            try:
                with self.kit.step("verify"):
                    self.kit.factory().verify(self.ctx(), SecretData(new))
                return
            except ConformanceError as err:
                if not isinstance(err.original, TransientError) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def store(self, new: Mapping[str, Any]) -> SecretVersion:
        """Write the new version as the engine does (idempotent on ``rotation_id``)."""
        current = self.vault.read(self.scenario.path)
        if current.metadata.get("rotation_id") == self.rotation_id:
            self.stored = current
            return current
        metadata = version_metadata(
            current.metadata,
            rotation_id=self.rotation_id,
            rotator=self.kit.factory().name,
            previous_version=self.from_version.version,
            finalize_after=datetime.now(UTC),
            grace_period="0s",
        )
        self.stored = self.vault.put(self.scenario.path, new, metadata)
        return self.stored

    def in_use(self) -> Usage | None:
        """Ask a fresh instance who still uses the old credential (before finalize)."""
        with self.kit.step("in_use"):
            usage = self.kit.factory().in_use(self.ctx(), SecretData(self.old))
        if usage is not None and not isinstance(usage, Usage):
            raise self.kit.fail(f"in_use returned a {type(usage).__name__}, not a Usage or None")
        return usage

    def discard(self, new: Mapping[str, Any]) -> None:
        """Like the engine: ``ctx.current`` is the version rotated from while the new one is
        unstored (an abandoned mint), the stored version once it is (a rollback)."""
        version = self.stored.version if self.stored is not None else None
        with self.kit.step("discard"):
            self.kit.factory().discard(self.ctx(version), SecretData(new))

    def preflight(self) -> None:
        """Ask a fresh instance whether a rotation could run (a dry run's question)."""
        with self.kit.step("preflight"):
            self.kit.factory().preflight(self.ctx())

    def finalize(self, new: Mapping[str, Any]) -> None:
        """Like the engine: ``ctx.current`` is still the version rotated from."""
        with self.kit.step("finalize"):
            self.kit.factory().finalize(self.ctx(), SecretData(self.old), SecretData(new))
