"""The sweep against real Redis: one sweep hands out every due finalization of a wave, in claim
scripts of at most :data:`~orchestrator.engine.sweep.DUE_BATCH` entries each."""

from __future__ import annotations

import pytest

from orchestrator.engine.sweep import DUE_BATCH
from orchestrator.state import keys
from orchestrator.state.due import DueQueue
from tests.fixtures.engine import EngineHarness

pytestmark = pytest.mark.integration

#: A wave that entered grace together: more than two claim scripts' worth of due entries.
WAVE = 1200


def test_one_sweep_hands_out_every_due_finalization_in_batches(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    due_ms = int(harness.text.time()[0]) * 1000 - 1000
    wave = {f"rot-wave-{n:04d}": due_ms for n in range(WAVE)}
    harness.client.zadd(keys.DUE, wave)
    batches: list[int] = []
    claim = DueQueue.claim

    def counted(queue: DueQueue, lease_ms: int, limit: int = 200) -> list[tuple[str, int]]:
        claimed = claim(queue, lease_ms, limit)
        batches.append(len(claimed))
        return claimed

    monkeypatch.setattr(DueQueue, "claim", counted)
    swept = harness.engine.sweep()

    handed = [rid for rid, _ in swept.due]
    assert sorted(handed) == sorted(wave), "every due entry, each once"
    assert batches == [DUE_BATCH, DUE_BATCH, WAVE - 2 * DUE_BATCH], batches
    leases = {lease for _, lease in swept.due}
    assert len(leases) <= len(batches) and min(leases) > due_ms, "each entry claimed with a lease"
    assert harness.engine.sweep().due == [], "claimed entries wait for their lease to pass"
