"""The engine in this process against a real Redis and the ScaiVault emulator (no Celery).

For rules that need no worker process: what a failure records, how long a retry waits, when
a run is started again and when finalize refuses. Rotators are plain test classes here.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from orchestrator.cli.situation import CANCELLABLE
from orchestrator.engine.core import Engine
from orchestrator.engine.seal import Sealer
from orchestrator.errors import AccessDenied, IllegalTransition, RetryLater, WriteOutcomeUnknown
from orchestrator.log import configure_logging
from orchestrator.routing import RoutingTable
from orchestrator.state import history, keys
from orchestrator.state.messages import RotateRequest
from orchestrator.state.records import RunRecord
from orchestrator.vault.client import VaultClient
from rotators import RotationContext, SecretData, TransientError
from rotators.random_password import RandomPasswordRotator
from tests.fixtures.engine import PATH, EngineHarness, InprocIssuer

pytestmark = pytest.mark.integration

SENTINEL = "424242"  # an int-parsable "password", so int(password) fails elsewhere


@pytest.mark.parametrize("which", ["harness", "vault_only"])
def test_a_foreign_exception_text_never_reaches_record_history_log_or_alert(
    request: pytest.FixtureRequest, log_stream: Any, which: str
) -> None:
    """Also: the failed step is named though a vault-only run never entered ``minting``."""
    harness: EngineHarness = request.getfixturevalue(which)
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "pw" + SENTINEL})

    def parse(ctx: RotationContext) -> None:
        int(ctx.current.data["password"])  # ValueError: invalid literal ... 'pw424242'

    harness.rotator.mint_hook = parse
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "failed"
    assert record.last_error == "ValueError in step mint" and record.step == "mint"
    assert SENTINEL not in harness.redis_dump()
    assert SENTINEL not in log_stream.getvalue()
    assert '"event": "rotation_failed"' in log_stream.getvalue()
    assert [a["reason"] for a in harness.alerts.bodies] == ["ValueError in step mint"]
    entries = history.read(harness.text, PATH)
    assert any(e.get("detail") == "ValueError in step mint" for e in entries)


def _fail_with_retry_after(seconds: float) -> Any:
    def hook(ctx: RotationContext) -> None:
        raise TransientError("daily API budget used up", retry_after=seconds)

    return hook


def test_an_hour_long_retry_after_holds_the_lease_instead_of_a_celery_countdown(
    harness: EngineHarness,
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    harness.rotator.mint_hook = _fail_with_retry_after(3600.0)  # Salesforce's limit_backoff
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "minting" and not record.lease_owner
    held_for = harness.text.zscore(keys.LEASES, record.rotation_id)
    assert held_for is not None
    now_ms = float(harness.text.time()[0]) * 1000
    assert held_for - now_ms > 3500 * 1000, "the sweeper must not re-drive it before the hour"
    assert harness.engine.sweep().redrive == []


def test_a_short_retry_after_is_a_countdown_within_the_backoff_cap(harness: EngineHarness) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    harness.rotator.mint_hook = _fail_with_retry_after(2.0)
    with pytest.raises(RetryLater) as caught:
        harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert 2.0 <= caught.value.countdown <= harness.settings.rotator_retry_backoff_max


def test_a_vault_only_retry_names_the_step_that_failed(vault_only: EngineHarness) -> None:
    version = vault_only.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    vault_only.rotator.verify_hook = _fail_with_retry_after(2.0)
    with pytest.raises(RetryLater) as caught:
        vault_only.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    record = vault_only.engine.store.require(caught.value.rotation_id)
    assert record.state == "queued", "a vault-only run enters no state for verify"
    retries = [e for e in history.read(vault_only.text, PATH) if e["event"] == "step_retry"]
    assert [e["step"] for e in retries] == ["verify"]


def test_a_vault_only_run_cancelled_before_it_stores_writes_nothing(
    vault_only: EngineHarness,
) -> None:
    """The ``storing`` transition is still the fence before the write."""
    version = vault_only.emulator.put_secret(PATH, {"username": "app", "password": "old"})

    def cancel(ctx: RotationContext) -> None:  # on-call cancels while the value is minted
        vault_only.engine.store.transition(ctx.rotation_id, "cancelled")

    vault_only.rotator.mint_hook = cancel
    record = vault_only.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "cancelled"
    assert vault_only.emulator.get_secret(PATH)["version"] == version, "nothing was stored"


def _in_grace(harness: EngineHarness) -> str:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "grace", record
    harness.rotator.calls.clear()
    return record.rotation_id


def _request_early_finalize(harness: EngineHarness, rotation_id: str) -> None:
    """What ``finalize --now`` records before it makes the run due."""
    harness.engine.store.update(rotation_id, finalize_requested="on-call at now")
    history.append(
        harness.text, PATH, "finalize_requested", rotation_id=rotation_id, detail="early"
    )


def test_finalize_refuses_a_run_whose_grace_is_not_over(harness: EngineHarness) -> None:
    rid = _in_grace(harness)
    record = harness.engine.finalize(rid, owner="stray-message")
    assert record is not None and record.state == "grace"
    assert "finalize" not in harness.rotator.calls
    _request_early_finalize(harness, rid)
    record = harness.engine.finalize(rid, owner="on-call")
    assert record is not None and record.state == "done"
    assert harness.rotator.calls[-1] == "finalize"


def test_finalize_needs_attention_when_someone_wrote_the_secret_during_grace(
    harness: EngineHarness,
) -> None:
    rid = _in_grace(harness)
    harness.emulator.put_secret(PATH, {"username": "app", "password": "by-hand"})
    _request_early_finalize(harness, rid)
    record = harness.engine.finalize(rid, owner="t2")
    assert record is not None and record.state == "needs_attention"
    assert "not our version" in (record.last_error or "")
    assert "finalize" not in harness.rotator.calls, "the old credential must stay valid"
    [alert] = harness.alerts.bodies
    assert alert["state"] == "needs_attention" and alert["rotation_id"] == rid


def test_finalize_does_not_move_a_run_a_rollback_holds(harness: EngineHarness) -> None:
    rid = _in_grace(harness)
    _request_early_finalize(harness, rid)
    assert harness.engine.store.hold(rid, "rollback-1", 60) == "ok"
    record = harness.engine.finalize(rid, owner="t2")
    assert record is not None and record.state == "grace"
    assert "finalize" not in harness.rotator.calls


def test_a_worker_that_lost_its_lease_does_not_revoke_the_old_credential(
    harness: EngineHarness, log_stream: Any
) -> None:
    rid = _in_grace(harness)
    _request_early_finalize(harness, rid)

    def steal_lease(ctx: RotationContext) -> None:
        harness.text.hset(keys.run(rid), "lease_owner", "another-worker")
        deadline = time.monotonic() + 10
        while '"lease_lost"' not in log_stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)

    harness.rotator.verify_hook = steal_lease
    harness.engine.finalize(rid, owner="t2")
    assert '"lease_lost"' in log_stream.getvalue()
    assert "finalize" not in harness.rotator.calls
    assert harness.engine.store.require(rid).state == "finalizing"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    [stopped] = [e for e in lines if e["event"] == "rotation_stopped"]
    assert stopped["path"] == PATH and "lease lost before finalize" in stopped["reason"]


def test_a_due_event_skipped_while_the_path_was_busy_does_not_swallow_the_next_one(
    harness: EngineHarness,
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    blocker = RunRecord(rotation_id="rot-mblocker", path=PATH, state="needs_attention",
                        trigger="manual", rotator="test-inproc", from_version=version)  # fmt: skip
    harness.engine.store.create(blocker)
    first = harness.engine.rotate(
        RotateRequest(PATH, event_id="evt_1", from_version=version), owner="t1"
    )
    assert first is not None and first.state == "skipped"
    again = harness.engine.rotate(
        RotateRequest(PATH, event_id="evt_1", from_version=version), owner="t1b"
    )
    assert again is not None and again.rotation_id == first.rotation_id, "a redelivery dedupes"
    harness.engine.store.transition("rot-mblocker", "cancelled")  # on-call ends it, no version
    second = harness.engine.rotate(
        RotateRequest(PATH, event_id="evt_2", from_version=version), owner="t2"
    )
    assert second is not None and second.rotation_id != first.rotation_id
    assert second.state == "grace" and second.new_version == version + 1
    late = harness.engine.rotate(
        RotateRequest(PATH, event_id="evt_3", from_version=version), owner="t3"
    )
    assert late is not None and late.state == "skipped", "stale: the version moved on"
    assert len(harness.emulator.versions(PATH)) == 2


def test_verify_stops_waiting_when_the_tasks_time_budget_is_spent(harness: EngineHarness) -> None:
    sleeps: list[float] = []

    class _Slow(InprocIssuer):
        verify_timeout = 100.0

        def verify(self, ctx: RotationContext, new: SecretData) -> None:
            raise TransientError("not propagated yet")

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 3:
            raise AssertionError("verify kept waiting past the task's budget")

    minter = harness.engine.driver.minter
    minter._sleep = sleep
    guard = harness.engine.failures.rt.guard
    guard.watch(None, deadline=time.monotonic() - 1)  # the task's budget is spent
    try:
        ctx: Any = SimpleNamespace(log=harness.engine.log)
        with pytest.raises(TransientError, match="not propagated"):
            minter.verify(_Slow(), ctx, SecretData({"password": "x"}))
    finally:
        guard.watch(None)
    assert sleeps == []


class _Counting(redis.Connection):
    """Counts round trips to Redis (a pipeline is one ``send_packed_command``)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Counting.sent += 1
        super().send_packed_command(command, check_health)


@pytest.mark.parametrize(
    ("rotator", "budget", "states"),
    [
        ("test-inproc", 5, "create + lease, minting, verifying, storing, grace"),
        ("random-password", 3, "create + lease, storing, grace"),
    ],
)
def test_a_rotation_to_grace_fits_its_redis_round_trip_budget_and_writes_its_whole_journal(
    harness: EngineHarness, redis_url: str, rotator: str, budget: int, states: str
) -> None:
    """The budget behind the end-to-end benchmark (tests/benchmarks/bench_e2e.py): one round
    trip per state change. History, metrics and the event's ledger entry ride along with them,
    and a vault-only rotator's mint and verify change no state (they touch nothing outside)."""
    routing = RoutingTable.parse(
        f'[[rules]]\nmatch = "apps/**"\nrotator = "{rotator}"\ngrace_period = "1h"\n',
        rotators={"test-inproc": harness.rotator, "random-password": RandomPasswordRotator()},
    )
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=_Counting)
    client = redis.Redis(connection_pool=pool)
    engine = Engine(harness.settings, client, VaultClient(harness.settings), routing)
    warm = harness.emulator.put_secret("apps/warm/db", {"username": "app", "password": "old"})
    engine.rotate(RotateRequest("apps/warm/db", from_version=warm), owner="t0")  # loads scripts
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    harness.text.zadd(keys.PENDING, {"e1": 1})  # the receiver's pending-ledger entry
    harness.text.hset(keys.PENDING_MESSAGES, "e1", "{}")
    _Counting.sent = 0
    record = engine.rotate(RotateRequest(PATH, from_version=version, event_id="e1"), owner="t1")
    sent = _Counting.sent
    engine.close()
    assert record is not None and record.state == "grace" and record.rotator == rotator
    assert sent <= budget, f"{sent} round trips (budget {budget}: {states})"
    events = [(e["event"], e.get("step")) for e in history.read(harness.text, PATH)]
    assert events == [
        ("rotation_started", None),
        ("step_done", "read"),
        ("step_done", "mint"),
        ("step_done", "verify"),
        ("step_done", "store"),
        ("rotation_stored", None),
    ]
    outcome = harness.text.hget(keys.METRIC_OUTCOMES, json.dumps([rotator, "stored"]))
    assert outcome == "2"
    assert harness.text.zscore(keys.DUE, record.rotation_id) is not None
    assert harness.text.zscore(keys.PENDING, "e1") is None, "the event left the ledger"
    assert not harness.text.hexists(keys.PENDING_MESSAGES, "e1")


def test_a_due_event_cannot_ask_for_less_grace_than_the_minimum(
    harness: EngineHarness, log_stream: Any
) -> None:
    """A stolen webhook secret must not get old credentials revoked at the next sweep."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    request = RotateRequest(PATH, from_version=version, grace_period="0s", event_id="evt_forged")
    record = harness.engine.rotate(request, owner="t1")
    assert record is not None and record.state == "grace"
    assert record.grace_period == harness.settings.rotator_min_grace == "1h"
    assert record.finalize_after is not None
    left = datetime.fromisoformat(record.finalize_after) - datetime.now(UTC)
    assert timedelta(minutes=59) < left <= timedelta(hours=1)
    assert harness.engine.sweep().due == [], "nothing to finalize before the minimum grace"
    assert '"event": "grace_period_raised"' in log_stream.getvalue()


def test_on_call_may_ask_for_a_short_grace_from_the_cli(harness: EngineHarness) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    request = RotateRequest(PATH, trigger="manual", grace_period="0s", actor="alice")
    record = harness.engine.rotate(request, owner="t1")
    assert record is not None and record.state == "grace" and record.grace_period == "0s"
    assert version == record.from_version


def test_the_read_before_the_create_is_not_reused_when_another_run_changed_the_path(
    harness: EngineHarness,
) -> None:
    """Between this task's read and its create, on-call rolled back the previous run (a new
    version, then the run ends): the driver must read again, not mint against the old read."""
    harness.emulator.put_secret(PATH, {"username": "app", "password": "v1"})
    engine, real_read, reads = harness.engine, harness.engine.vault.read, []

    def read_then_rollback(path: str, version: int | None = None) -> Any:
        current = real_read(path, version)
        reads.append(current.version)
        if len(reads) == 1:  # what a rollback does after this read: a version, then the run ends
            harness.emulator.put_secret(PATH, {"username": "app", "password": "v2"})
            earlier = RunRecord(rotation_id="rot-earlier", path=PATH, state="grace")
            engine.store.create(earlier)
            engine.store.transition("rot-earlier", "rolled_back")
        return current

    engine.vault.read = read_then_rollback  # type: ignore[method-assign]
    record = engine.rotate(RotateRequest(PATH, from_version=1, event_id="e1"), owner="t1")
    assert reads == [1, 2], "the driver read the secret again"
    assert record is not None and record.state == "failed"
    assert "someone else rotated" in (record.last_error or "")
    assert "mint" not in harness.rotator.calls, "nothing minted against a stale read"


def test_the_read_before_the_create_is_reused_when_nothing_else_ran(harness: EngineHarness) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "v1"})
    real_read, reads = harness.engine.vault.read, []

    def counted(path: str, version: int | None = None) -> Any:
        reads.append(path)
        return real_read(path, version)

    harness.engine.vault.read = counted  # type: ignore[method-assign]
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "grace"
    assert reads == [PATH], "one ScaiVault read per rotation"


def test_each_step_is_logged_at_debug_and_not_at_info(
    harness: EngineHarness, log_stream: Any
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    steps = [json.loads(line) for line in log_stream.getvalue().splitlines() if "step_done" in line]
    assert [s["step"] for s in steps] == ["read", "mint", "verify", "store"]
    configure_logging(level="INFO", fmt="json", stream=log_stream)  # log_stream restores it
    log_stream.truncate(0)
    other = harness.emulator.put_secret("apps/inproc/other", {"username": "a", "password": "b"})
    harness.engine.rotate(RotateRequest("apps/inproc/other", from_version=other), owner="t2")
    assert '"event": "rotation_stored"' in log_stream.getvalue()
    assert "step_done" not in log_stream.getvalue()


def test_once_a_write_is_sent_a_cancel_is_refused_and_never_revokes_what_lands(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's write is on its way when the run looks cancellable to on-call (here: it was
    marked needs_attention meanwhile, as a worker that took over after a lost lease does).
    ``cancel`` is refused; and had a run been cancelled anyway, the worker whose write lands
    would not revoke the credential ScaiVault now serves."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    store = harness.engine.store
    write = harness.engine.driver.writeback.write

    def late_write(*args: Any, **kwargs: Any) -> Any:
        rid = kwargs["rotation_id"]
        store.transition(rid, "needs_attention", last_error="taken over")
        with pytest.raises(IllegalTransition, match="begun writing its new version"):
            store.transition(rid, "cancelled", expect=CANCELLABLE, refuse_if_sealed=True)
        store.transition(rid, "cancelled")  # what nothing may do now: cancel it regardless
        return write(*args, **kwargs)  # the write lands

    monkeypatch.setattr(harness.engine.driver.writeback, "write", late_write)
    harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")  # it stops
    current = harness.emulator.get_secret(PATH)
    assert current["version"] == version + 1, "the write landed"
    assert "discard" not in harness.rotator.calls, "what ScaiVault serves was revoked"


def test_an_issuer_run_cancelled_before_it_stores_revokes_what_it_minted(
    harness: EngineHarness,
) -> None:
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})

    def cancel(ctx: RotationContext) -> None:  # on-call cancels while the value is verified
        store = harness.engine.store
        store.transition(ctx.rotation_id, "cancelled", expect=CANCELLABLE, refuse_if_sealed=True)

    harness.rotator.verify_hook = cancel
    harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")  # it stops
    assert harness.emulator.get_secret(PATH)["version"] == version, "nothing was stored"
    assert harness.rotator.calls.count("discard") >= 1
    events = [e["event"] for e in history.read(harness.text, PATH)]
    assert "credential_withdrawn" in events


def test_a_retry_refused_for_good_never_revokes_a_value_an_earlier_write_may_still_land(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1's write goes out and its answer is lost (settling it is refused); attempt 2
    resumes the sealed value and its own write is refused too (a token withdrawn meanwhile).
    Attempt 1's write may still land, so nothing is revoked; when it lands, ScaiVault serves a
    credential that works."""
    harness.engine.driver.minter.sealer = Sealer([Fernet.generate_key().decode()])
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    vault = harness.engine.vault
    real_write = vault.write
    lost: list[tuple[Any, Any]] = []

    def write(*args: Any, **kwargs: Any) -> Any:
        if not lost:  # attempt 1: the request is on its way, its answer lost
            lost.append((args, kwargs))
            raise WriteOutcomeUnknown("read timeout", code="timeout", path=PATH)
        raise AccessDenied("denied", code="access_denied", status=403, path=PATH)

    monkeypatch.setattr(vault, "write", write)
    with pytest.raises(RetryLater) as caught:
        harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert harness.rotator.calls == ["mint", "verify"]
    with pytest.raises(RetryLater):  # attempt 2: refused, the outcome still unknown
        harness.engine.drive(caught.value.rotation_id, owner="t2")
    assert "discard" not in harness.rotator.calls, "a value whose write may land was revoked"
    args, kwargs = lost[0]
    real_write(*args, **kwargs)  # attempt 1's write lands late
    assert harness.emulator.get_secret(PATH)["version"] == version + 1
