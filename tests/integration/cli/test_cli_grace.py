"""``finalize`` and ``rollback`` via the real CLI, worker, beat, emulator and fake Salesforce."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from orchestrator.local.sandbox import Sandbox
from orchestrator.state.due import DueQueue
from orchestrator.state.runs import RunStore
from tests.fixtures.stack import OnCallCli, UpdaterSandbox, unique

pytestmark = pytest.mark.integration


def _in_grace(sandbox: Sandbox, oncall_cli: OnCallCli, path: str) -> dict[str, Any]:
    result = oncall_cli("rotate", path, "--wait", "--grace", "1h", "--json")
    assert result.code == 0, result
    record: dict[str, Any] = result.json()
    assert record["state"] == "grace"
    return record


def test_finalize_early_needs_now_then_revokes_the_old_pair(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_salesforce(unique("finalize"), scheduled=False)
    _in_grace(sandbox, oncall_cli, path)
    old_works = sandbox.salesforce_accepts(sandbox.originals[path])
    assert old_works, "both pairs work during grace"

    early = oncall_cli("finalize", path)
    assert early.code == 2 and "--now" in early.err

    done = oncall_cli("finalize", path, "--now", "--reason", "leaked in a log", "--json")
    assert done.code == 0, done
    assert done.json()["state"] == "done"
    old_works = sandbox.salesforce_accepts(sandbox.originals[path])
    new_works = sandbox.salesforce_accepts(sandbox.read(path)["data"])
    assert new_works and not old_works, "finalize revokes the old pair only"

    late = oncall_cli("rollback", path)
    assert late.code == 1 and "no longer possible" in late.err and "revokes" in late.err
    events = [e["event"] for e in oncall_cli("history", path, "--json").json()]
    assert "finalize_requested" in events


def test_finalize_refuses_when_the_new_credential_does_not_verify(
    sandbox: Sandbox, oncall_cli: OnCallCli, salesforce_reset: Callable[..., Any]
) -> None:
    path = sandbox.add_salesforce(unique("noverify"), scheduled=False)
    _in_grace(sandbox, oncall_cli, path)
    new = sandbox.read(path)["data"]
    # The org's token endpoint fails: the new credential cannot be shown to work right now.
    sandbox.salesforce(
        "POST", "/_fake/faults",
        {"match": "POST /services/oauth2/token", "kind": "unavailable", "count": 1000},
    ).raise_for_status()  # fmt: skip
    refused = oncall_cli("finalize", path, "--now")
    sandbox.salesforce("DELETE", "/_fake/faults")
    assert refused.code == 1, refused
    assert "refusing to finalize" in refused.err and "does not verify" in refused.err
    assert oncall_cli("status", path, "--json").json()["state"] == "grace"
    both = sandbox.salesforce_accepts(sandbox.originals[path]) and sandbox.salesforce_accepts(new)
    assert both, "a refused finalize leaves both pairs working"


def test_rollback_during_grace_restores_the_old_pair(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_salesforce(unique("rollback"), scheduled=False)
    _in_grace(sandbox, oncall_cli, path)
    new = sandbox.read(path)["data"]

    result = oncall_cli("rollback", path, "--reason", "partner cannot use the new key", "--json")
    assert result.code == 0, result
    assert result.json()["state"] == "rolled_back"
    # Salesforce cannot un-rotate a promoted pair: the new one still works, and we say so.
    assert sandbox.salesforce_accepts(new), "the new pair is still valid"
    assert (
        "still valid" in result.json()["warning"] and "still valid" in result.json()["last_error"]
    )
    assert "WARNING" in result.err and "cannot un-rotate" in result.err
    assert "revoked the new" not in result.out + result.err
    current = sandbox.read(path)
    assert current["version"] == 3
    restored = current["data"] == sandbox.originals[path]
    assert restored, "version 3 holds the data of version 1"
    assert "finalize_after" not in current["metadata"]
    assert current["metadata"]["description"].startswith("Salesforce OAuth")
    old_works = sandbox.salesforce_accepts(sandbox.originals[path])
    assert old_works, "the restored (old) pair must work"

    again = oncall_cli("rollback", path)
    assert again.code == 1 and "not in grace" in again.err
    events = [e["event"] for e in oncall_cli("history", path, "--json").json()]
    assert "rotation_rolled_back" in events


def test_a_rotation_after_a_salesforce_rollback_never_stores_the_rolled_back_pair(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_salesforce(unique("rollback-rotate"), scheduled=False)
    original = sandbox.originals[path]
    _in_grace(sandbox, oncall_cli, path)
    leaked = sandbox.read(path)["data"]
    rolled = oncall_cli("rollback", path, "--reason", "version 2 leaked")
    assert rolled.code == 0, rolled

    # Salesforce's primary is the leaked pair now and the restored one sits in the staged
    # slot as Rotated: the next rotation must not take the leaked pair for its own.
    again = oncall_cli("rotate", path, "--wait", "--grace", "1h", "--json")
    assert again.code == 1, again
    record = again.json()
    assert record["state"] == "failed", record
    reason = record["last_error"]
    assert "no pair of this rotation" in reason and "rollback" in reason, reason
    assert "Rotated" in reason and "finalize --now" in reason, reason
    current = sandbox.read(path)
    assert current["version"] == 3 and current["data"] == original
    versions = sandbox.admin("GET", f"/v1/secrets/{path}/versions")["versions"]
    assert len(versions) == 3, "nothing was stored after the rollback"
    still = sandbox.salesforce_accepts(original)
    assert still, "the restored pair (version 1's) still works at Salesforce"
    assert sandbox.salesforce_accepts(leaked), "Salesforce cannot un-rotate the leaked primary"


def test_rollback_of_a_password_writes_the_old_value_back(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_password(unique("pwback"), scheduled=False)
    _in_grace(sandbox, oncall_cli, path)
    assert oncall_cli("rollback", path).code == 0
    restored = sandbox.read(path)["data"] == sandbox.originals[path]
    assert restored, "the old password is back"
    assert oncall_cli("status", path, "--json").json()["state"] == "rolled_back"
    fresh = oncall_cli("rotate", path, "--wait", "--grace", "1h")  # the path is free again
    assert fresh.code == 0, fresh


def test_rollback_of_an_updater_sets_the_old_password_back_at_the_target(
    sandbox: UpdaterSandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_acl_user(unique("acl"))
    old = sandbox.originals[path]
    _in_grace(sandbox, oncall_cli, path)
    new = sandbox.read(path)["data"]
    changed = sandbox.redis_accepts(new) and not sandbox.redis_accepts(old)
    assert changed, "the updater changed the password in place"

    result = oncall_cli("rollback", path, "--reason", "an app still has the old one")
    assert result.code == 0, result
    restored = sandbox.redis_accepts(old) and not sandbox.redis_accepts(new)
    assert restored, "rollback made the target accept the old password again"
    back = sandbox.read(path)["data"] == old
    assert back, "ScaiVault holds the old password again"


def test_rollback_holds_the_run_before_writing_and_lets_go_when_refused(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_password(unique("held"), scheduled=False)
    record = _in_grace(sandbox, oncall_cli, path)
    rid = record["rotation_id"]
    client = redis.Redis.from_url(sandbox.ends.redis_url)
    store, due = RunStore(client), DueQueue(client)
    try:
        # Someone else holds the run (a concurrent rollback): nothing may be written.
        assert store.hold(rid, "rollback:other", 60) == "ok"
        refused = oncall_cli("rollback", path)
        assert refused.code == 1 and "held by rollback:other" in refused.err, refused
        assert sandbox.read(path)["version"] == 2, "a refused rollback writes nothing"
        early = oncall_cli("finalize", path, "--now")
        assert early.code == 1 and "held by rollback:other" in early.err, early
        store.unhold(rid, "rollback:other")

        # A rollback that refuses after taking the hold gives it back and keeps the due entry.
        sandbox.put(path, {"username": "x", "password": "someone-else-wrote"}, "by hand")
        moved = oncall_cli("rollback", path)
        assert moved.code == 1 and "someone wrote since" in moved.err, moved
        after = store.require(rid)
        assert after.state == "grace" and after.lease_owner is None
        assert due.score(rid) is not None, "the finalize stays scheduled"
    finally:
        client.close()


def test_cancel_refuses_a_run_that_already_stored_its_new_version(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    """A run that needs attention after someone wrote the secret during its grace stored its
    new version already: cancelling it would claim nothing was stored."""
    path = sandbox.add_password(unique("cancel-stored"), scheduled=False)
    stored = _in_grace(sandbox, oncall_cli, path)
    sandbox.put(path, {"username": "x", "password": "written-by-hand-1"}, "by hand")
    finalize = oncall_cli("finalize", path, "--now", "--json")
    assert finalize.code == 1, finalize
    record = oncall_cli.wait_state(path, {"needs_attention"})
    assert record["rotation_id"] == stored["rotation_id"] and record["new_version"] == 2
    cancel = oncall_cli("cancel", path, "--reason", "oops")
    assert cancel.code == 1, cancel
    assert "already stored" in cancel.err
    assert oncall_cli.record(path)["state"] == "needs_attention"
