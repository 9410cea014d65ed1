"""ScaiVault writes whose answer comes late, with real workers and the emulator's latency faults.

A PUT whose answer arrives after the client's read timeout may still land: its outcome is
unknown, which is not a conflict. The run must stay in ``storing`` and settle (the same
check-and-set write sent again, the version after ours read back) instead of being abandoned,
and nothing may be discarded while the outcome is unknown. Grace is counted from the moment
the new version is stored, not from before the write's retries. A permanent refusal while
settling (the re-send, or the read-back) leaves the outcome unknown; it never makes the engine
discard. One case runs the engine in this process to refuse the read-back alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import redis

from orchestrator.errors import AccessDenied, RetryLater
from orchestrator.state.messages import RotateRequest
from tests.fixtures.engine import PATH as PATH_INPROC
from tests.fixtures.engine import EngineHarness
from tests.fixtures.worker import EngineStack
from tests.rotators.ledger import creds_key, fingerprint

pytestmark = pytest.mark.integration

PATH = "apps/late/db"
OLD = "SENTINEL-old-late-7c1d"


def _ledger(stack: EngineStack) -> dict[str, str]:
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        return ledger.hgetall(creds_key(PATH))


def _start(stack: EngineStack, grace: str = "2s") -> int:
    stack.env["SCAIVAULT_READ_TIMEOUT"] = "1"
    stack.env["SCAIVAULT_RETRY_DEADLINE"] = "6"
    stack.routing(stack.ledger_rule().replace('grace_period = "2s"', f'grace_period = "{grace}"'))
    version = stack.emulator.put_secret(PATH, {"username": "app", "password": OLD})
    with redis.Redis.from_url(stack.target_url, decode_responses=True) as ledger:
        ledger.hset(creds_key(PATH), fingerprint(OLD), "active")
    return version


def test_a_write_answered_after_the_timeout_is_settled_not_abandoned(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    version = _start(stack)
    # The first PUT is answered 2.5 s late (the client gives up after 1 s), but it lands.
    stack.emulator.fault(match=PATH, methods=["PUT"], latency=2.5, count=1)
    stack.start(workers=1)
    stack.publish(path=PATH, event_id="evt_late", from_version=version)
    record = stack.wait_run(PATH, ("grace", "done", "failed", "needs_attention"))
    assert record.state in {"grace", "done"}, record
    versions = stack.emulator.versions(PATH)
    assert [v["version"] for v in versions] == [version, version + 1], "exactly one new version"
    current = stack.emulator.get_secret(PATH)
    assert current["metadata"]["rotation_id"] == record.rotation_id
    stored = current["data"]["password"]
    ledger = _ledger(stack)
    assert ledger[fingerprint(stored)] == "active", "the stored credential was never discarded"
    assert ledger[fingerprint(OLD)] in {"active", "revoked"}
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert done.state == "done", done
    assert _ledger(stack)[fingerprint(stored)] == "active"


def test_grace_counts_from_when_the_new_version_was_stored(engine_stack: EngineStack) -> None:
    stack = engine_stack
    version = _start(stack, grace="3s")
    # ScaiVault refuses the write for a while: the version is stored several seconds after
    # the store step began, and consumers still get the whole grace period after that.
    stack.emulator.fault(
        match=PATH, methods=["PUT"], code="service_unavailable", count=3, retry_after=1
    )
    stack.start(workers=1, beat=False)
    stack.publish(path=PATH, event_id="evt_grace_late", from_version=version)
    record = stack.wait_run(PATH, ("grace", "failed", "needs_attention"))
    assert record.state == "grace", record
    stored_at = datetime.fromisoformat(stack.emulator.versions(PATH)[-1]["created_at"])
    assert record.finalize_after is not None
    finalize_after = datetime.fromisoformat(record.finalize_after)
    assert (finalize_after - stored_at).total_seconds() >= 3 - 0.05, (stored_at, finalize_after)


def test_a_permanent_refusal_while_settling_a_late_write_discards_nothing(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    version = _start(stack)
    # The first PUT lands but is answered after the timeout; the re-send that settles it is
    # refused (access_denied, as a token withdrawn mid-settle would be). The late write may
    # still land, so the minted credential must not be discarded.
    stack.emulator.fault(match=PATH, methods=["PUT"], latency=2.5, count=1)
    stack.emulator.fault(match=PATH, methods=["PUT"], code="access_denied", count=1)
    stack.start(workers=1)
    stack.publish(path=PATH, event_id="evt_late_denied", from_version=version)
    stack.wait(
        lambda: len(stack.emulator.versions(PATH)) == 2, timeout=30, what="the late write lands"
    )
    current = stack.emulator.get_secret(PATH)
    stored = current["data"]["password"]
    record = stack.wait_run(PATH, ("done", "failed", "needs_attention"))
    assert current["metadata"]["rotation_id"] == record.rotation_id
    assert record.state == "done", record
    assert _ledger(stack)[fingerprint(stored)] == "active", "the current credential was discarded"


def test_a_permanent_refusal_reading_a_lost_write_back_discards_nothing(
    harness: EngineHarness,
) -> None:
    """The first PUT lands but its answer is lost; the re-send is refused as a conflict, and
    reading version N+1 back is refused too: whose N+1 is stays unknown, so the run stays in
    ``storing`` and the minted credential is kept."""
    version = harness.emulator.put_secret(PATH_INPROC, {"username": "app", "password": "old"})
    harness.emulator.fault(match=PATH_INPROC, methods=["PUT"], code="drop_response", count=1)
    real_read = harness.engine.vault.read

    def denied_read_back(path: str, at: int | None = None) -> Any:
        if at == version + 1:
            raise AccessDenied("injected: no read of the new version", code="access_denied")
        return real_read(path, at)

    harness.engine.vault.read = denied_read_back  # type: ignore[method-assign]
    with pytest.raises(RetryLater):
        harness.engine.rotate(RotateRequest(PATH_INPROC, from_version=version), owner="t1")
    record = harness.engine.store.last(PATH_INPROC)
    assert record is not None and record.state == "storing", record
    current = harness.emulator.get_secret(PATH_INPROC)
    assert current["version"] == version + 1
    assert current["metadata"]["rotation_id"] == record.rotation_id
    assert "discard" not in harness.rotator.calls, "the stored credential was discarded"
