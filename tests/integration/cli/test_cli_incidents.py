"""On-call's incidents replayed on the real stack (CLI subprocess, worker, beat, emulator, fake
Salesforce): each ends with the right exit code and a message naming the next step, and none
needs the logs or the source to understand."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator.local.sandbox import Sandbox
from tests.fixtures.stack import CliResult, OnCallCli, unique

pytestmark = pytest.mark.integration

#: What a raw log line looks like in a command's output (console renderer, or a JSON line).
LOG_MARKERS = ("[warning", "[info", "[error", '"event":', "vault_gave_up", "vault_retry")


def assert_no_log_lines(*results: CliResult) -> None:
    for result in results:
        for marker in LOG_MARKERS:
            assert marker not in result.out + result.err, (marker, str(result))


def eventually(probe: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.3)


@pytest.fixture
def vault_faults(sandbox: Sandbox) -> Iterator[Callable[..., None]]:
    """Add fault rules to the stack's ScaiVault emulator; all are cleared afterwards."""

    def add(**spec: Any) -> None:
        sandbox.admin("POST", "/v1/_emulator/faults", spec)

    yield add
    sandbox.admin("DELETE", "/v1/_emulator/faults")


def test_no_all_clear_from_a_redis_nobody_named(sandbox: Sandbox, oncall_cli: OnCallCli) -> None:
    """Without the stack's environment, `status` used to answer from the default Redis."""
    refused = oncall_cli("status", without=("REDIS_URL",))
    assert refused.code == 2, refused
    assert "REDIS_URL is not set" in refused.err and "nothing active" not in refused.out
    assert "next: set REDIS_URL" in refused.err and "ROTATOR_CLI_ALLOW_DEFAULTS" in refused.err
    for command in (("history", "a/b"), ("cancel", "a/b"), ("retry", "a/b")):
        assert oncall_cli(*command, without=("REDIS_URL",)).code == 2

    answered = oncall_cli("status")
    port = sandbox.ends.redis_url.rsplit(":", 1)[1]
    assert answered.code == 0 and f"asked redis redis://127.0.0.1:{port}" in answered.err


def test_errors_and_dry_runs_name_the_redis_and_scaivault_they_asked(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    """An "unknown path" from the wrong ScaiVault must say which ScaiVault answered."""
    vault = sandbox.ends.vault_url.rstrip("/")
    redis_port = sandbox.ends.redis_url.rsplit(":", 1)[1]
    unknown = oncall_cli("status", f"{sandbox.ends.prefix}/no/such-{unique('x')}")
    assert unknown.code == 1 and "unknown path" in unknown.err, unknown
    assert f"asked redis redis://127.0.0.1:{redis_port}" in unknown.err
    assert f"scaivault {vault}" in unknown.err, unknown
    as_json = oncall_cli("history", f"{sandbox.ends.prefix}/no/such-{unique('x')}", "--json")
    assert as_json.code == 1 and "error" in as_json.json()
    assert f"scaivault {vault}" in as_json.err, as_json

    path = sandbox.add_password(unique("dry"), scheduled=False)
    dry = oncall_cli("rotate", path, "--dry-run")
    assert dry.code == 0, dry
    assert f"scaivault {vault}" in dry.err and "asked redis" in dry.err, dry


def test_a_failing_store_says_so_while_it_retries(
    sandbox: Sandbox, oncall_cli: OnCallCli, vault_faults: Callable[..., None]
) -> None:
    """ScaiVault answering 503 to PUTs used to look like a healthy `storing` for a minute."""
    path = sandbox.add_password(unique("stuck"), scheduled=False)
    vault_faults(match=path, methods=["PUT"], code="service_unavailable", count=100_000)
    started = oncall_cli("rotate", path)
    assert started.code == 0, started

    def failing() -> dict[str, Any] | None:
        status = oncall_cli("status", path, "--json").json()
        now = " ".join(status.get("now", []))  # no record yet: an error
        return status if "ScaiVault PUT answered 503" in now else None

    def retrying() -> dict[str, Any] | None:
        status = failing()
        return status if status and status["now"][0].startswith("retrying: attempt") else None

    status = eventually(retrying, "status says the ScaiVault write is being retried")
    assert status["state"] == "storing"
    limit = status["attempts_max"]
    assert limit and f"attempt {status['attempts']} of {limit} failed" in status["now"][0], status
    assert "the next attempt is at " in status["now"][0]
    assert any(line.startswith("held by worker ") for line in status["now"]), status

    def overview_retrying() -> dict[str, Any] | None:
        rows = oncall_cli("status", "--json").json()
        row = next(r for r in rows if r["path"] == path)
        return row if (row["driving"] or "").startswith("retrying ") else None

    row = eventually(overview_retrying, "the overview says the run is retrying")
    assert row["driving"].startswith(f"retrying {row['attempts']}/{limit}, next "), row
    assert ", worker " in row["driving"], row
    table = oncall_cli("status").out
    assert "DRIVING" in table and f"ing {row['attempts']}/{limit}" in table, table
    assert status["next"] == [f"`status {path}` shows its progress; it goes on by itself"]

    # The hints lead somewhere: neither retry nor rotate sends on-call round in circles.
    retry = oncall_cli("retry", path)
    rotate = oncall_cli("rotate", path)
    for refused in (retry, rotate):
        assert refused.code == 1, refused
        assert f"next: `status {path}` shows its progress" in refused.err
        assert "`cancel" not in refused.err and "`rotate" not in refused.err
    plain = oncall_cli("status", path)
    assert plain.code == 0 and "now:  " in plain.out and "ScaiVault PUT answered 503" in plain.out

    sandbox.admin("DELETE", "/v1/_emulator/faults")
    oncall_cli.wait_state(path, {"grace"}, timeout=180)
    assert_no_log_lines(started, retry, rotate, plain)


def test_the_cli_s_own_scaivault_failure_is_one_error_without_log_lines(
    sandbox: Sandbox, oncall_cli: OnCallCli, vault_faults: Callable[..., None]
) -> None:
    path = sandbox.add_password(unique("down"), scheduled=False)
    vault_faults(match=path, code="service_unavailable", count=100_000)
    failed = oncall_cli("rotate", path)
    assert failed.code == 1, failed
    assert failed.err.startswith("error: ScaiVault") and "\nnext: " in failed.err
    assert_no_log_lines(failed)


def test_an_unrouted_secret_is_never_sent_to_rotate(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    """`status` of a secret no rule covers used to suggest `rotate`, which then exits 2."""
    path = f"unrouted/{unique('x')}"
    sandbox.put(path, {"username": "u", "password": "unrouted-secret-value"}, "no rule")
    status = oncall_cli("status", path)
    assert status.code == 1, status
    assert "routing file" in status.err and "`rotate" not in status.err
    assert oncall_cli("rotate", path).code == 2


def test_finalize_now_says_what_became_of_each_credential(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    """The leaked Salesforce credential: rotate it, then revoke the leaked pair at once."""
    path = sandbox.add_salesforce(unique("fin"), scheduled=False)
    leaked = sandbox.originals[path]
    assert oncall_cli("rotate", path, "--wait", "--grace", "1h").code == 0
    done = oncall_cli("finalize", path, "--now", "--reason", "leaked in a log", "--actor", "al")
    assert done.code == 0, done
    lines = done.out.splitlines()
    assert (
        lines[0].startswith(f"finalized {path} (rotation ") and "by al: leaked in a log" in lines[0]
    )
    assert lines[1:] == [
        "  old credential (version 1): revoked",
        "  new credential (version 2): current in ScaiVault",
    ]
    assert not sandbox.salesforce_accepts(leaked), "the leaked pair is revoked"
    assert sandbox.salesforce_accepts(sandbox.read(path)["data"]), "the new pair works"
    status = oncall_cli("status", path)
    assert "finalize_after" not in status.out and "now:  done: the old credential" in status.out
    assert_no_log_lines(done, status)


def test_a_rollback_that_leaves_a_pair_valid_is_listed_until_acknowledged(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_salesforce(unique("stray"), scheduled=False)
    assert oncall_cli("rotate", path, "--wait", "--grace", "1h").code == 0
    rolled = oncall_cli("rollback", path, "--reason", "partner broke")
    assert rolled.code == 0, rolled
    assert "old credential (version 1): works again; ScaiVault holds its data as version 3" in (
        rolled.out
    )
    assert "new credential (version 2): STILL VALID at the target" in rolled.out

    status = oncall_cli("status", path)
    assert "restored_version" in status.out and "finalize_after" not in status.out
    assert "new_version" not in status.out
    assert f"`acknowledge {path}`" in status.out and "left valid at the target" in status.out
    overview = oncall_cli("status", "--json").json()
    assert any(r["path"] == path and r["state"] == "left_valid" for r in overview), overview

    acked = oncall_cli("acknowledge", path, "--reason", "revoked in Setup")
    assert acked.code == 0, acked
    after = oncall_cli("status", "--json").json()
    assert not any(r["path"] == path and r["state"] == "left_valid" for r in after)
    events = [e["event"] for e in oncall_cli("history", path, "--json").json()]
    assert "credential_left_valid" in events and "stray_acknowledged" in events
    assert oncall_cli("acknowledge", path).code == 1
    assert_no_log_lines(rolled, status, acked)


def test_cancel_and_retry_wait_and_say_what_became_of_each_credential(
    sandbox: Sandbox, oncall_cli: OnCallCli, vault_faults: Callable[..., None]
) -> None:
    path = sandbox.add_password(unique("cancel"), scheduled=False)
    vault_faults(match=path, code="service_unavailable", count=100_000, methods=["PUT"])
    assert oncall_cli("rotate", path).code == 0
    oncall_cli.wait_state(path, {"storing"})
    refused = oncall_cli("cancel", path)
    assert refused.code == 1 and "may be stored" in refused.err, refused

    failing = sandbox.add_password(unique("retry"), scheduled=False)
    vault_faults(match=failing, code="access_denied", count=1, methods=["PUT"])
    ended = oncall_cli("rotate", failing, "--wait")
    assert ended.code == 1 and f"retry {failing}" in ended.err, ended
    retried = oncall_cli("retry", failing, "--wait", "--reason", "token fixed")
    assert retried.code == 0, retried
    assert "  old credential (version 1): still valid until finalize" in retried.out
    assert "  new credential (version 2): current in ScaiVault" in retried.out
    sandbox.admin("DELETE", "/v1/_emulator/faults")
    assert_no_log_lines(refused, ended, retried)
