"""What every part of the engine shares: settings, the recorder, due-queue, ScaiVault, routing."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from orchestrator.engine.lease import LeaseGuard, LeaseKeeper
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings
from orchestrator.state.due import DueQueue
from orchestrator.state.recorder import Recorder
from orchestrator.vault.client import VaultClient


@dataclass(frozen=True)
class Runtime:
    """The connections and tables one worker process's engine parts use (built by the engine).

    ``runs`` is the one way the engine changes a run and records what happened to it: every
    Redis round trip of a rotation goes through it.
    """

    settings: Settings
    runs: Recorder
    due: DueQueue
    vault: VaultClient
    routing: RoutingTable
    log: structlog.stdlib.BoundLogger
    guard: LeaseGuard = field(default_factory=LeaseGuard)
    keeper: LeaseKeeper = field(default_factory=LeaseKeeper)

    @property
    def lease_seconds(self) -> float:
        """How long a run's lease lasts without a heartbeat (``ROTATOR_LEASE_SECONDS``)."""
        return self.settings.rotator_lease_seconds
