"""What every part of the engine shares: settings, the Redis stores, ScaiVault, routing, journal."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from orchestrator.engine.journal import Journal
from orchestrator.engine.lease import LeaseGuard, LeaseKeeper
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings
from orchestrator.state.due import DueQueue
from orchestrator.state.runs import RunStore
from orchestrator.vault.client import VaultClient


@dataclass(frozen=True)
class Runtime:
    """The connections and tables one worker process's engine parts use (built by the engine)."""

    settings: Settings
    store: RunStore
    due: DueQueue
    vault: VaultClient
    routing: RoutingTable
    journal: Journal
    log: structlog.stdlib.BoundLogger
    guard: LeaseGuard = field(default_factory=LeaseGuard)
    keeper: LeaseKeeper = field(default_factory=LeaseKeeper)

    @property
    def lease_seconds(self) -> float:
        """How long a run's lease lasts without a heartbeat (``ROTATOR_LEASE_SECONDS``)."""
        return self.settings.rotator_lease_seconds
