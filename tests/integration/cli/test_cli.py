"""The on-call CLI as a real subprocess against a real stack: rotate, status, history, retry,
cancel, and the failure messages and exit codes on-call sees at 3 a.m."""

from __future__ import annotations

import time
from typing import Any

import pytest

from orchestrator.local.processes import free_port
from orchestrator.local.sandbox import Sandbox
from tests.fixtures.stack import OnCallCli, unique

pytestmark = pytest.mark.integration


def test_rotate_wait_shows_the_steps_and_records_actor_and_reason(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_password(unique("wait"), scheduled=False)
    # A grace long enough to be seen by the CLI's next poll on a busy machine; finalize ends it.
    result = oncall_cli(
        "rotate", path, "--wait", "--grace", "1h", "--reason", "quarterly drill", "--actor", "alice"
    )
    assert result.code == 0, result
    for line in (": rotation_started", ": step_done step=mint", ": step_done step=store",
                 ": rotation_stored from_version=1 new_version=2", ": grace"):  # fmt: skip
        assert f"{path}{line}" in result.out
    assert result.out.index("step=mint") < result.out.index("step=store")

    assert oncall_cli("finalize", path, "--now").code == 0
    record = oncall_cli.wait_state(path, {"done"}, timeout=60)
    assert record["trigger"] == "manual" and record["new_version"] == 2
    changed = sandbox.read(path)["data"]["password"] != sandbox.originals[path]["password"]
    assert changed, "the password changed"

    trail = oncall_cli("history", path, "--json").json()
    requested = [e for e in trail if e["event"] == "rotation_requested"]
    assert requested and requested[0]["actor"] == "alice"
    assert requested[0]["reason"] == "quarterly drill"
    plain = oncall_cli("history", path, "--limit", "3")
    assert plain.code == 0 and len(plain.out.strip().splitlines()) == 3


def test_status_and_one_active_rotation_per_path(sandbox: Sandbox, oncall_cli: OnCallCli) -> None:
    path = sandbox.add_password(unique("status"), scheduled=False)
    assert oncall_cli("rotate", path, "--wait", "--grace", "1h", "--json").code == 0
    record = oncall_cli("status", path, "--json").json()
    for name in ("path", "rotation_id", "state", "step", "trigger", "from_version", "new_version",
                 "finalize_after", "attempts", "last_error", "updated_at"):  # fmt: skip
        assert name in record
    assert record["state"] == "grace" and record["from_version"] == 1
    plain = oncall_cli("status", path)
    assert plain.code == 0 and plain.out.splitlines()[0].split() == ["path", path]

    overview = oncall_cli("status", "--json").json()
    assert any(row["path"] == path and row["state"] == "grace" for row in overview)
    table = oncall_cli("status")
    assert table.out.splitlines()[0].split()[:2] == ["PATH", "STATE"] and path in table.out

    again = oncall_cli("rotate", path)  # one active rotation per path
    assert again.code == 1
    assert "already active" in again.err and "finalize" in again.err and "rollback" in again.err

    stored = oncall_cli("cancel", path)  # in grace the new version is stored: cancel refuses
    assert stored.code == 1 and "already stored" in stored.err and "rollback" in stored.err


def test_rotate_via_vault_uses_the_signed_webhook(sandbox: Sandbox, oncall_cli: OnCallCli) -> None:
    path = sandbox.add_password(unique("viavault"), scheduled=True)
    result = oncall_cli("rotate", path, "--via-vault", "--wait", "--json")
    assert result.code == 0, result
    assert result.json()["state"] in {"grace", "done"}
    deliveries = [d for d in sandbox.deliveries() if d["path"] == path]
    assert any(d["type"] == "rotation.due" and d["status"] == 202 for d in deliveries)


def test_clear_errors_and_exit_codes(sandbox: Sandbox, oncall_cli: OnCallCli) -> None:
    prefix = sandbox.ends.prefix
    unknown = oncall_cli("rotate", f"{prefix}/db/{unique('missing')}")
    assert unknown.code == 1 and "unknown path" in unknown.err and "next:" in unknown.err

    unrouted = oncall_cli("rotate", "elsewhere/app/key")
    assert unrouted.code == 2 and "no routing rule matches" in unrouted.err

    bad = oncall_cli("rotate", f"{prefix}/db/x", "--grace", "two days")
    assert bad.code == 2 and "is not a duration" in bad.err

    too_long = oncall_cli("rotate", f"{prefix}/db/x", "--grace", "2914000d")
    assert too_long.code == 2 and "longer than the maximum duration, 3650d" in too_long.err

    nothing = oncall_cli("status", f"{prefix}/db/{unique('never')}")
    assert nothing.code == 1 and "unknown path" in nothing.err

    no_history = oncall_cli("history", f"{prefix}/db/{unique('never')}", "--json")
    assert no_history.code == 1 and no_history.json()["error"]["exit_code"] == 1

    usage = oncall_cli("rotate")
    assert usage.code == 2 and "PATH or --prefix" in usage.err
    for result in (unknown, unrouted, bad, too_long, nothing, usage):
        assert "Traceback" not in result.err


def test_unreachable_redis_and_scaivault_say_what_to_do(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    result = oncall_cli("status", REDIS_URL=dead_redis)
    assert result.code == 1 and "Redis at" in result.err and "REDIS_URL" in result.err

    path = sandbox.add_password(unique("novault"), scheduled=False)
    dead_vault = f"http://127.0.0.1:{free_port()}"
    result = oncall_cli("rotate", path, SCAIVAULT_URL=dead_vault, SCAIVAULT_RETRY_DEADLINE="1")
    assert result.code == 1 and "error: ScaiVault" in result.err
    assert "SCAIVAULT_URL" in result.err and "Traceback" not in result.err

    no_config = oncall_cli("rotate", path, ROTATOR_CONFIG="missing.toml")
    assert no_config.code == 2 and "routing file" in no_config.err


def test_failed_rotation_is_loud_and_retry_finishes_it(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_password(unique("retry"), scheduled=False)
    sandbox.admin(
        "POST", "/v1/_emulator/faults",
        {"match": path, "code": "access_denied", "methods": ["PUT"], "count": 1},
    )  # fmt: skip
    failed = oncall_cli("rotate", path, "--wait")
    assert failed.code == 1, failed
    assert "rotation ended failed" in failed.err or "needs_attention" in failed.err
    assert "next: fix the cause" in failed.err and f"retry {path}" in failed.err
    assert sandbox.read(path)["version"] == 1

    overview = oncall_cli("status", "--json").json()
    assert any(row["path"] == path for row in overview)

    retried = oncall_cli("retry", path, "--reason", "fault cleared")
    assert retried.code == 0, retried
    oncall_cli.wait_state(path, {"grace", "done"}, timeout=60)
    assert sandbox.read(path)["version"] == 2
    events = [e["event"] for e in oncall_cli("history", path, "--json").json()]
    assert "rotation_retried" in events

    nothing = oncall_cli("retry", path)
    assert nothing.code == 1 and "nothing to retry" in nothing.err


def test_cancel_stops_a_rotation_before_it_stores(
    sandbox: Sandbox, oncall_cli: OnCallCli, salesforce_reset: object
) -> None:
    path = sandbox.add_salesforce(unique("cancel"), scheduled=False)
    salesforce_reset(propagation_delay=15.0)  # type: ignore[operator]
    assert oncall_cli("rotate", path).code == 0
    oncall_cli.wait_state(path, {"minting"}, timeout=30)
    cancelled = oncall_cli("cancel", path, "--reason", "wrong secret", "--json")
    assert cancelled.code == 0, cancelled
    assert cancelled.json()["state"] == "cancelled"
    assert sandbox.read(path)["version"] == 1
    old_works = sandbox.salesforce_accepts(sandbox.originals[path])
    assert old_works, "the old pair still works"

    again = oncall_cli("cancel", path)
    assert again.code == 1 and "no active rotation" in again.err


def test_cancel_wait_says_plainly_what_became_of_the_new_credential(
    sandbox: Sandbox, oncall_cli: OnCallCli, salesforce_reset: Any
) -> None:
    """A Salesforce pair minted before the cancel is promoted already: it cannot be revoked,
    and `cancel --wait` says so instead of a hedge."""
    salesforce_reset(propagation_delay=15.0)
    path = sandbox.add_salesforce(unique("cancelw"), scheduled=False)
    assert oncall_cli("rotate", path).code == 0
    oncall_cli.wait_state(path, {"minting"}, timeout=30)
    left = oncall_cli("cancel", path, "--wait", "--reason", "wrong secret", "--json")
    assert left.code == 0, left
    assert left.json()["credentials"][1] == (
        f"new credential: STILL VALID at the target: revoke it by hand, then `acknowledge {path}`"
    ), left
    assert sandbox.read(path)["version"] == 1
    listed = [r for r in oncall_cli("status", "--json").json() if r["path"] == path]
    assert [r["state"] for r in listed] == ["left_valid"], listed

    later = sandbox.add_salesforce(unique("cancelnw"), scheduled=False)
    assert oncall_cli("rotate", later).code == 0
    oncall_cli.wait_state(later, {"minting"}, timeout=30)
    unwaited = oncall_cli("cancel", later)
    assert unwaited.code == 0, unwaited
    assert "new credential: none stored; one the worker minted is withdrawn at its next " in (
        unwaited.out
    )
    assert f"`status {later}` shows the outcome" in unwaited.out
    stopped = oncall_cli.wait_state  # the run stays cancelled; its history says when it let go
    assert stopped(later, {"cancelled"})["state"] == "cancelled"
    deadline = time.monotonic() + 60
    while "rotation_stopped" not in oncall_cli("history", later).out:
        assert time.monotonic() < deadline, "the worker let go of the cancelled run"
        time.sleep(0.3)
    for each in (path, later):  # both pairs stay valid: on-call revokes them by hand
        acked = oncall_cli("acknowledge", each, "--reason", "revoked by hand")
        assert acked.code == 0, acked
