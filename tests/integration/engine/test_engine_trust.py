"""What the engine trusts, against a real Redis and the ScaiVault emulator (engine in-process).

Metadata is writable by whoever may write a secret, clocks of workers differ, and events may be
forged or stale: ids are bound to their path, one malformed entry never stops reconcile for the
others, grace is counted on Redis's clock, and requests that stored nothing leave nothing behind
for ever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.engine.ids import manual_id, scheduled_id
from orchestrator.state import history, keys
from orchestrator.state.messages import RotateRequest
from orchestrator.state.records import RunRecord
from rotators.versions import ROTATED_BY
from tests.fixtures.engine import PATH, EngineHarness

pytestmark = pytest.mark.integration

OTHER = "apps/inproc/other"


def _forged(harness: EngineHarness, path: str, **metadata: Any) -> int:
    """A version of ``path`` whose metadata claims the engine wrote it."""
    harness.emulator.put_secret(path, {"username": "app", "password": "v1"})
    meta = {"rotated_by": ROTATED_BY, "previous_version": 1, **metadata}
    return harness.emulator.put_secret(path, {"username": "app", "password": "v2"}, metadata=meta)


def _future(seconds: float = -60) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def test_reconcile_refuses_a_rotation_id_planted_from_another_path(
    harness: EngineHarness, log_stream: Any
) -> None:
    """A writer of OTHER plants PATH's next scheduled id: PATH's due event must still rotate."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    planted = scheduled_id(PATH, version)
    _forged(harness, OTHER, rotation_id=planted, finalize_after=_future())
    assert harness.engine.reconcile() == 0
    assert harness.engine.store.get(planted) is None
    assert '"reconcile_path_skipped"' in log_stream.getvalue()
    assert "not derived from this path" in log_stream.getvalue()
    record = harness.engine.rotate(RotateRequest(PATH, event_id="evt_b", from_version=version), "t")
    assert record is not None and record.state == "grace" and record.path == PATH


def test_reconcile_refuses_a_manual_rotation_id_planted_from_another_path(
    harness: EngineHarness,
) -> None:
    """A writer of another secret copies PATH's manual id (readable in PATH's metadata) into
    its own; Redis then loses PATH's run: reconcile rebuilds it under PATH, never elsewhere."""
    forger = "apps/inproc/a-forger"  # listed, and reconciled, before PATH
    rid = manual_id(PATH, "task-of-path")
    for path in (forger, PATH):
        _forged(harness, path, rotation_id=rid, finalize_after=_future(3600), grace_period="1h")
    assert harness.engine.reconcile() == 1
    rebuilt = harness.engine.store.require(rid)
    assert rebuilt.path == PATH and rebuilt.state == "grace"
    assert harness.engine.client.zscore(keys.DUE, rid) is not None


def test_a_due_event_never_merges_into_a_run_of_another_path(harness: EngineHarness) -> None:
    """Even if a run of another path holds the id (rebuilt from planted metadata before ids were
    bound to paths), the due event starts a run of its own."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    planted = RunRecord(rotation_id=scheduled_id(PATH, version), path=OTHER, state="grace",
                        rotator="test-inproc", from_version=1, new_version=2)  # fmt: skip
    harness.engine.store.create(planted)
    record = harness.engine.rotate(RotateRequest(PATH, event_id="evt_b", from_version=version), "t")
    assert record is not None and record.path == PATH and record.state == "grace"
    assert record.rotation_id != planted.rotation_id
    assert harness.engine.store.require(planted.rotation_id).path == OTHER


def test_one_malformed_metadata_value_does_not_stop_reconcile(
    harness: EngineHarness, log_stream: Any
) -> None:
    _forged(harness, OTHER, rotation_id="rot-mdeadbeefdeadbeefdeadbee", previous_version="x1",
            finalize_after=_future())  # fmt: skip
    good_id = scheduled_id(PATH, 1)
    _forged(harness, PATH, rotation_id=good_id, finalize_after=_future(), grace_period="1h")
    assert harness.engine.reconcile() == 1
    rebuilt = harness.engine.store.require(good_id)
    assert rebuilt.state == "grace" and (rebuilt.from_version, rebuilt.new_version) == (1, 2)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    skipped = [e["path"] for e in lines if e["event"] == "reconcile_path_skipped"]
    assert skipped == [OTHER]
    assert "x1" not in log_stream.getvalue(), "the bad value itself is not logged"


def test_a_rebuilt_run_is_due_a_whole_grace_after_its_version_was_written(
    harness: EngineHarness,
) -> None:
    """Metadata may claim an early finalize_after: the version's own age decides."""
    rid = scheduled_id(PATH, 1)
    _forged(harness, PATH, rotation_id=rid, finalize_after=_future(-3600), grace_period="1h")
    harness.engine.reconcile()
    due_ms = harness.engine.client.zscore(keys.DUE, rid)
    assert due_ms is not None
    assert due_ms / 1000 >= datetime.now(UTC).timestamp() + 3600 - 60


class _Skewed(datetime):
    """A worker clock an hour behind."""

    @classmethod
    def now(cls, tz: Any = None) -> _Skewed:  # type: ignore[override]
        return super().now(tz) - timedelta(hours=1)  # type: ignore[return-value]


def test_grace_goes_by_redis_clock_not_the_storing_workers(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker an hour behind must not schedule finalize an hour early (nor one ahead end
    grace early): due times are Redis's TIME plus the grace period.

    The driver is the engine module that handles times on the way to grace (it dates the
    version's ``finalize_after``); its clock runs an hour behind here. Finalizing is judged by
    the run store's scripts on Redis's clock."""
    monkeypatch.setattr("orchestrator.engine.driver.datetime", _Skewed)
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    seconds, micros = harness.engine.client.time()
    redis_now = seconds + micros / 1e6
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "grace" and record.finalize_after is not None
    due = datetime.fromisoformat(record.finalize_after).timestamp()
    assert due >= redis_now + 3600 - 1, "the rule's 1h grace counts on Redis's clock"
    stated = harness.emulator.get_secret(PATH)["metadata"]["finalize_after"]
    assert datetime.fromisoformat(stated).timestamp() >= redis_now + 3600 - 1, stated
    finalized = harness.engine.finalize(record.rotation_id, owner="stray")
    assert finalized is not None and finalized.state == "grace"
    assert "finalize" not in harness.rotator.calls


def test_an_early_finalize_request_is_kept_by_the_run_not_only_in_history(
    harness: EngineHarness,
) -> None:
    """``finalize --now`` writes the run record: history entries that follow cannot push the
    request out of sight."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    record = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert record is not None and record.state == "grace"
    harness.engine.store.update(record.rotation_id, finalize_requested="alice at now")
    history.append(harness.text, PATH, "finalize_requested", rotation_id=record.rotation_id)
    for n in range(60):
        history.append(harness.text, PATH, "secret.updated", new_version=n)
    done = harness.engine.finalize(record.rotation_id, owner="t2")
    assert done is not None and done.state == "done"


def test_an_unrouted_path_is_skipped_without_reading_scaivault(harness: EngineHarness) -> None:
    reads: list[str] = []
    real_read = harness.engine.vault.read

    def counted(path: str, version: int | None = None) -> Any:
        reads.append(path)
        return real_read(path, version)

    harness.engine.vault.read = counted  # type: ignore[method-assign]
    record = harness.engine.rotate(
        RotateRequest("nowhere/routed/x", event_id="evt_u", from_version=3), owner="t1"
    )
    assert record is not None and record.state == "skipped", record
    assert "no rule" in (record.last_error or "") and reads == []
    ttl = harness.text.ttl(keys.run(record.rotation_id))
    assert 0 < ttl <= harness.settings.decision_ttl().total_seconds()
    assert not harness.text.exists(keys.history("nowhere/routed/x")), "no keys that never expire"
    assert harness.text.ttl(keys.last("nowhere/routed/x")) > 0
    [alert] = harness.alerts.bodies
    assert alert["state"] == "skipped"


def test_a_due_event_for_a_routed_path_that_does_not_exist_leaves_only_expiring_keys(
    harness: EngineHarness,
) -> None:
    path = "apps/inproc/forged-nonexistent"
    request = RotateRequest(path, event_id="evt_forged_path", from_version=1)
    record = harness.engine.rotate(request, owner="t1")
    assert record is not None and record.state == "failed", record
    assert "cannot read the secret" in (record.last_error or "")
    assert not harness.text.exists(keys.history(path)), "no keys that never expire"
    forever = [k for k in harness.text.scan_iter(f"*{path}*") if harness.text.ttl(k) == -1]
    assert forever == []
    [alert] = harness.alerts.bodies
    assert alert["state"] == "failed"


def test_version_zero_is_stale_not_whatever_is_current(harness: EngineHarness) -> None:
    harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    record = harness.engine.rotate(RotateRequest(PATH, event_id="evt_0", from_version=0), "t1")
    assert record is not None and record.state == "skipped"
    assert "stale request" in (record.last_error or "")
    assert [v["version"] for v in harness.emulator.versions(PATH)] == [1]


@pytest.fixture
def stale_events(harness: EngineHarness) -> Iterator[list[RunRecord]]:
    harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    records = []
    for n in range(5):
        request = RotateRequest(PATH, event_id=f"evt_stale_{n}", from_version=100 + n)
        record = harness.engine.rotate(request, owner="t")
        assert record is not None
        records.append(record)
    yield records


def test_records_of_forged_or_stale_events_expire(
    harness: EngineHarness, stale_events: list[RunRecord]
) -> None:
    """A stolen webhook secret can send unique (path, version) events without end: what they
    leave in Redis (Redis runs noeviction) expires with the dedupe window."""
    for record in stale_events:
        assert record.state == "skipped"
        ttl = harness.text.ttl(keys.run(record.rotation_id))
        assert 0 < ttl <= harness.settings.decision_ttl().total_seconds()
    for record in stale_events:
        harness.text.delete(keys.run(record.rotation_id))  # as if they expired
    assert harness.engine.store.list(limit=10) == []
    assert harness.text.zcard(keys.RUNS) == 0, "expired runs leave the status index"


def test_a_manual_request_delivered_again_rotates_once(harness: EngineHarness) -> None:
    """A manual task message taken again after its run ended (a worker died after BRPOP, kombu
    restored it) names the same run: its id derives from the task id."""
    harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    request = RotateRequest(PATH, trigger="manual", actor="alice")
    first = harness.engine.rotate(request, owner="celery-task-1")
    assert first is not None and first.state == "grace"
    again = harness.engine.rotate(request, owner="celery-task-1")
    assert again is not None and again.rotation_id == first.rotation_id
    assert [v["version"] for v in harness.emulator.versions(PATH)] == [1, 2], "one new version"
    other = harness.engine.rotate(request, owner="celery-task-2")
    assert other is not None and other.rotation_id != first.rotation_id, "a new request is new"


def test_a_decision_never_hides_the_run_in_grace_it_was_about(harness: EngineHarness) -> None:
    """A stale or forged due event skipped while the path is in grace expires; the path's last
    run (what status, finalize and rollback look at) stays the run in grace."""
    version = harness.emulator.put_secret(PATH, {"username": "app", "password": "old"})
    run = harness.engine.rotate(RotateRequest(PATH, from_version=version), owner="t1")
    assert run is not None and run.state == "grace"
    skipped = harness.engine.rotate(
        RotateRequest(PATH, event_id="evt_forged", from_version=version + 40), owner="t2"
    )
    assert skipped is not None and skipped.state == "skipped"
    last = harness.engine.store.last(PATH)
    assert last is not None and last.rotation_id == run.rotation_id


def test_reconcile_never_dates_a_finalize_under_the_minimum_grace(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata may claim a grace of 0s: a rebuilt run still waits ROTATOR_MIN_GRACE after its
    version was written."""
    harness.engine.settings.__dict__["rotator_min_grace"] = "1h"  # frozen model: the test's own
    rid = scheduled_id(PATH, 1)
    _forged(harness, PATH, rotation_id=rid, finalize_after=_future(-3600), grace_period="0s")
    harness.engine.reconcile()
    due_ms = harness.engine.client.zscore(keys.DUE, rid)
    assert due_ms is not None and due_ms / 1000 >= datetime.now(UTC).timestamp() + 3600 - 60
