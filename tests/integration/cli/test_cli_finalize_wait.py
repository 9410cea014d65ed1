"""Finalize waits while the old credential is in use, seen through the real CLI: the session
sandbox's ``redis-acl`` rule (two ACL users alternately on the sandbox's Redis, re-checked every
second), its worker and beat, and a client that stays connected as the old user."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from tests.fixtures.stack import OnCallCli, UpdaterSandbox

pytestmark = pytest.mark.integration


@contextmanager
def connected_as(sandbox: UpdaterSandbox, data: dict[str, Any]) -> Iterator[None]:
    """A consumer that stays connected (authenticated as ``data``'s user) inside the block."""
    client = redis.Redis.from_url(
        sandbox.ends.redis_url,
        username=data["username"],
        password=data["password"],
        client_name="billing-api",
    )
    client.ping()
    try:
        yield
    finally:
        client.close()


def wait_waiting(oncall_cli: OnCallCli, path: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until the path's run waits in grace for the old credential's users."""
    deadline = time.monotonic() + timeout
    while True:
        record = oncall_cli.record(path)
        if record.get("state") == "grace" and record.get("waiting"):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never waited for the old user: {record}")
        time.sleep(0.2)


def rotate(oncall_cli: OnCallCli, sandbox: UpdaterSandbox, path: str) -> tuple[dict, dict]:
    """Rotate with a 1 s grace; the old and new data."""
    old = sandbox.read(path)["data"]
    result = oncall_cli("rotate", path, "--wait", "--grace", "1s", "--json")
    assert result.code == 0 and result.json()["state"] in {"grace", "done"}, result
    new = sandbox.read(path)["data"]
    assert new["username"] != old["username"], "the other user took over"
    return old, new


def test_finalize_waits_for_the_old_users_connection_then_revokes(
    sandbox: UpdaterSandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_acl_pair()
    old_login = sandbox.read(path)["data"]
    with connected_as(sandbox, old_login):
        old, new = rotate(oncall_cli, sandbox, path)
        record = wait_waiting(oncall_cli, path)
        assert record["waiting"].startswith(f"1 session of {old['username']} from 127.0.0.1")
        assert "(billing-api)" in record["waiting"]

        status = oncall_cli("status", path)
        waiting_line = rf"(?m)^waiting\s+1 session of {old['username']} from 127\.0\.0\.1"
        assert status.code == 0 and re.search(waiting_line, status.out), status

        asked = oncall_cli("finalize", path)
        assert asked.code == 1, asked
        assert "still in use" in asked.err and f"1 session of {old['username']}" in asked.err
        assert sandbox.redis_accepts(old), "the old credential keeps working while in use"
        assert sandbox.redis_accepts(new)

    # The consumer is gone: a later re-check finds the old user unused and revokes it.
    done = oncall_cli.wait_state(path, {"done"}, timeout=120)
    assert done["waiting_checks"] >= 1
    assert not sandbox.redis_accepts(old), "finalize removed the old user's password"
    assert sandbox.redis_accepts(new)
    events = [e["event"] for e in oncall_cli("history", path, "--json").json()]
    assert "finalize_deferred" in events and "finalize_in_use" not in events


def test_finalize_now_revokes_at_once_and_records_who_still_used_it(
    sandbox: UpdaterSandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_acl_pair("now")
    old_login = sandbox.read(path)["data"]
    with connected_as(sandbox, old_login):
        old, new = rotate(oncall_cli, sandbox, path)
        wait_waiting(oncall_cli, path)
        forced = oncall_cli("finalize", path, "--now", "--reason", "consumer is gone", "--json")
        assert forced.code == 0 and forced.json()["state"] == "done", forced
        warning = forced.json()["in_use_warning"]
        assert warning and f"1 session of {old['username']}" in warning, forced
        assert not sandbox.redis_accepts(old), "--now revoked the old password although in use"
        assert sandbox.redis_accepts(new)
    history = oncall_cli("history", path, "--json").json()
    [entry] = [e for e in history if e["event"] == "finalize_in_use"]
    assert f"1 session of {old['username']}" in entry["detail"]
