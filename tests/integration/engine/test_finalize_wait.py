"""Finalize waits while the old credential is in use (the engine in this process, real Redis,
the ScaiVault emulator): it defers back to grace with who still uses it, re-checks later,
holds the run or finalizes anyway once the longest wait is over, and ``--now`` overrides."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from orchestrator.engine.alerts import Alerter
from orchestrator.engine.core import Engine
from orchestrator.routing import RoutingTable
from orchestrator.state import history, keys
from orchestrator.state.messages import RotateRequest
from orchestrator.state.metrics import registry
from orchestrator.state.records import RunRecord
from orchestrator.vault.client import VaultClient
from rotators import RotationContext, SecretData, Usage
from tests.fixtures.engine import PATH, EngineHarness, InprocIssuer
from tests.fixtures.worker import AlertSink

pytestmark = pytest.mark.integration


class UsageIssuer(InprocIssuer):
    """An issuer whose ``in_use`` answers what the test set in ``usage``."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: Usage | None = Usage(sessions=0)

    def in_use(self, ctx: RotationContext, old: SecretData) -> Usage | None:
        self.calls.append("in_use")
        return self.usage


IN_USE = Usage(sessions=2, who="app_a", clients=("10.0.4.7", "10.0.4.9"))


class Waiting:
    """An engine whose rule waits for the old credential to be unused, and its rotator."""

    def __init__(self, harness: EngineHarness, rule: str) -> None:
        self.harness = harness
        self.rotator = UsageIssuer()
        text = f'[[rules]]\nmatch = "apps/**"\nrotator = "test-inproc"\n{rule}'
        routing = RoutingTable.parse(text, rotators={"test-inproc": self.rotator})
        settings = harness.settings
        self.engine = Engine(
            settings,
            harness.client,
            VaultClient(settings),
            routing,
            alerter=Alerter(settings.rotator_alert_webhook_url),
        )
        self.text = harness.text

    def in_grace(self) -> str:
        """A rotation of PATH in grace whose grace is already over (on-call asked for 0s)."""
        self.harness.emulator.put_secret(PATH, {"username": "app_a", "password": "old"})
        request = RotateRequest(PATH, trigger="manual", grace_period="0s", actor="alice")
        record = self.engine.rotate(request, owner="t1")
        assert record is not None and record.state == "grace", record
        self.rotator.calls.clear()
        return record.rotation_id

    def finalize(self, rotation_id: str) -> RunRecord:
        record = self.engine.finalize(rotation_id, owner="t2")
        assert record is not None
        return record

    def events(self, name: str) -> list[dict[str, str]]:
        return [e for e in history.read(self.text, PATH) if e["event"] == name]

    def metric(self, name: str) -> float:
        value = registry(self.harness.client).get_sample_value("scaivault_rotator_" + name)
        assert value is not None
        return value

    def waited_since(self, rotation_id: str, seconds: float) -> None:
        """Move the start of the wait back (what time passing would do)."""
        since = int((time.time() - seconds) * 1000)
        self.text.hset(keys.run(rotation_id), "waiting_since_ms", since)
        self.text.zadd(keys.WAITING, {rotation_id: since})


@pytest.fixture
def waiting(harness: EngineHarness) -> Iterator[Waiting]:
    w = Waiting(harness, 'finalize_recheck = "5s"\nfinalize_wait_max = "1h"\n')
    yield w
    w.engine.close()


def test_finalize_defers_while_the_old_credential_is_in_use(waiting: Waiting) -> None:
    rid = waiting.in_grace()
    waiting.rotator.usage = IN_USE
    before = int(time.time() * 1000)
    record = waiting.finalize(rid)
    assert record.state == "grace" and record.step == "grace"
    assert record.waiting == "2 sessions of app_a from 10.0.4.7, 10.0.4.9"
    assert record.waiting_checks == 1 and record.waiting_since is not None
    assert waiting.rotator.calls == ["verify", "in_use"], "nothing was revoked"
    due = waiting.text.zscore(keys.DUE, rid)
    assert due is not None and before + 4000 <= due <= int(time.time() * 1000) + 5000
    [deferred] = waiting.events("finalize_deferred")
    assert deferred["sessions"] == "2" and deferred["detail"] == record.waiting
    assert waiting.metric("finalize_waiting") == 1
    assert waiting.text.zscore(keys.WAITING, rid) is not None

    again = waiting.finalize(rid)  # a second check: still in use, the next one further out
    assert again.state == "grace" and again.waiting_checks == 2
    assert again.waiting_since == record.waiting_since

    waiting.rotator.usage = Usage(sessions=0)
    done = waiting.finalize(rid)
    assert done.state == "done" and done.waiting is None
    assert waiting.rotator.calls[-2:] == ["in_use", "finalize"]
    assert waiting.metric("finalize_waiting") == 0
    assert waiting.text.zscore(keys.DUE, rid) is None


def test_each_finalize_counts_its_own_attempts(waiting: Waiting) -> None:
    """A rotation that took one attempt shows 1, and so does its finalize; a finalize deferred
    more often than ROTATOR_MAX_ATTEMPTS still runs (each check starts its count again)."""
    rid = waiting.in_grace()
    assert waiting.engine.store.require(rid).attempts == 1
    waiting.rotator.usage = IN_USE
    for check in range(1, waiting.harness.settings.rotator_max_attempts + 3):
        deferred = waiting.finalize(rid)
        assert deferred.state == "grace" and deferred.waiting_checks == check, deferred
    waiting.rotator.usage = Usage(sessions=0)
    done = waiting.finalize(rid)
    assert done.state == "done" and done.attempts == 1, done


def test_a_rotator_that_cannot_tell_this_time_does_not_hold_finalize(waiting: Waiting) -> None:
    rid = waiting.in_grace()
    waiting.rotator.usage = None
    assert waiting.finalize(rid).state == "done"
    assert waiting.rotator.calls == ["verify", "in_use", "finalize"]


def test_after_the_longest_wait_the_run_needs_attention_loudly(
    waiting: Waiting, alert_sink: AlertSink
) -> None:
    rid = waiting.in_grace()
    waiting.rotator.usage = IN_USE
    waiting.finalize(rid)
    waiting.waited_since(rid, 2 * 3600)
    held = waiting.finalize(rid)
    assert held.state == "needs_attention", held
    assert held.last_error is not None
    assert "still in use after waiting 2h" in held.last_error
    assert "2 sessions of app_a" in held.last_error and f"finalize {PATH} --now" in held.last_error
    assert "finalize" not in waiting.rotator.calls, "the old credential stays valid"
    assert waiting.text.zscore(keys.DUE, rid) is None
    assert waiting.metric("finalize_waiting") == 0
    [alert] = [a for a in alert_sink.bodies if a["rotation_id"] == rid]  # sent before return
    assert alert["state"] == "needs_attention" and "still in use" in alert["reason"]

    # What `finalize --now` does with it: back to grace, asked for; the worker revokes.
    waiting.engine.store.transition(
        held, "grace", expect={"needs_attention"}, finalize_requested="bob", last_error=None
    )
    assert waiting.finalize(rid).state == "done"
    assert waiting.rotator.calls[-1] == "finalize"
    [overridden] = waiting.events("finalize_in_use")
    assert "(finalize --now): 2 sessions of app_a" in overridden["detail"]


def test_finalize_now_overrides_the_wait_and_says_who_still_used_it(waiting: Waiting) -> None:
    rid = waiting.in_grace()
    waiting.rotator.usage = IN_USE
    waiting.engine.store.update(rid, finalize_requested="on-call at now")
    assert waiting.finalize(rid).state == "done"
    assert waiting.rotator.calls == ["verify", "in_use", "finalize"]
    [entry] = waiting.events("finalize_in_use")
    assert entry["detail"] == (
        "revoking the old credential while still in use (finalize --now): "
        "2 sessions of app_a from 10.0.4.7, 10.0.4.9"
    )


@pytest.mark.parametrize(
    ("rule", "calls"),
    [
        ('finalize_wait_max = "1h"\nwhen_still_used = "finalize"\n', ["in_use", "finalize"]),
        ("wait_until_unused = false\n", ["finalize"]),
    ],
    ids=["finalize anyway after the longest wait", "a rule that does not wait"],
)
def test_rules_that_finalize_while_in_use(
    harness: EngineHarness, rule: str, calls: list[str]
) -> None:
    waiting = Waiting(harness, rule)
    try:
        rid = waiting.in_grace()
        waiting.rotator.usage = IN_USE
        if "in_use" in calls:
            waiting.finalize(rid)  # the first check defers
            waiting.waited_since(rid, 2 * 3600)
            waiting.rotator.calls.clear()
        assert waiting.finalize(rid).state == "done"
        assert waiting.rotator.calls == ["verify", *calls]
    finally:
        waiting.engine.close()


def test_the_recheck_backs_off_and_never_passes_the_longest_wait(harness: EngineHarness) -> None:
    waiting = Waiting(harness, 'finalize_recheck = "3m"\nfinalize_wait_max = "12m"\n')
    try:
        rid = waiting.in_grace()
        waiting.rotator.usage = IN_USE
        delays = []
        for waited in (0, 0, 10 * 60):  # the third check comes 10 minutes into the wait
            if waited:
                waiting.waited_since(rid, waited)
            now = int(time.time() * 1000)
            assert waiting.finalize(rid).state == "grace"
            due = waiting.text.zscore(keys.DUE, rid)
            assert due is not None
            delays.append((due - now) / 60_000)
        # 3m (less up to 10% jitter), then doubled but capped at RECHECK_CAP (5m), then only
        # what is left of the 12m, so that the longest wait is acted on in time
        assert 2.6 <= delays[0] <= 3.1 and 4.4 <= delays[1] <= 5.1
        assert 1.8 <= delays[2] <= 2.1
    finally:
        waiting.engine.close()
