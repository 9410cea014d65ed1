"""``rotate --dry-run``: the plan and read-only probes of each path, exit 1 naming why one would
fail, and nothing changed (no run record, no ledger entry, no message, no ScaiVault write)."""

from __future__ import annotations

import pytest
import redis

from orchestrator.state import keys
from tests.fixtures.stack import OnCallCli, UpdaterSandbox, unique

pytestmark = pytest.mark.integration


def _traces(sandbox: UpdaterSandbox) -> tuple[int, int]:
    with redis.Redis.from_url(sandbox.ends.redis_url) as client:
        return client.llen(keys.TASK_QUEUE), client.zcard(keys.PENDING)


def test_a_dry_run_probes_and_changes_nothing(
    sandbox: UpdaterSandbox, oncall_cli: OnCallCli
) -> None:
    path = sandbox.add_acl_pair(unique("dry"))
    before = _traces(sandbox)
    result = oncall_cli("rotate", path, "--dry-run", "--grace", "2h", "--json")
    assert result.code == 0, result
    (plan,) = result.json()["paths"]
    assert plan["rotator"] == "redis-acl" and plan["strategy"] == "issuer"
    assert plan["grace_period"] == "2h" and plan["current_version"] == 1
    assert plan["active"] is None and plan["rule"].startswith("rule ")
    assert plan["target"].endswith("(no limit)")
    probes = {p["name"]: p["result"] for p in plan["probes"]}
    assert probes == {"admin secret readable": "ok", "target reachable": "ok",
                      "rotator preflight": "ok"}  # fmt: skip
    assert oncall_cli.record(path) == {}, "no run record"
    assert _traces(sandbox) == before, "no message, no ledger entry"
    assert sandbox.read(path)["version"] == 1

    plain = oncall_cli("rotate", path, "--dry-run")
    assert plain.code == 0 and "ready" in plain.out and "nothing was changed" in plain.out

    with redis.Redis.from_url(sandbox.ends.redis_url) as client:  # the admin loses a grant
        client.execute_command("ACL", "SETUSER", "rotator_admin", "-acl|getuser")
    failing = oncall_cli("rotate", path, "--dry-run")
    assert failing.code == 1, failing
    assert f"error: {path} would fail: rotator preflight:" in failing.err
    assert "Traceback" not in failing.err
    assert oncall_cli.record(path) == {} and sandbox.read(path)["version"] == 1
    oncall_cli.assert_no_secret_values()


def test_a_prefix_dry_run_and_a_path_that_would_fail(
    sandbox: UpdaterSandbox, oncall_cli: OnCallCli
) -> None:
    folder = f"fleet/{unique('dry')}"
    paths = [sandbox.add_password(f"s{i}", folder=folder, scheduled=False) for i in range(2)]
    prefix = f"{sandbox.ends.prefix}/{folder}"
    before = _traces(sandbox)
    result = oncall_cli("rotate", "--prefix", prefix, "--dry-run", "--json")
    assert result.code == 0, result
    assert [p["path"] for p in result.json()["paths"]] == paths
    assert all(not p["would_fail"] for p in result.json()["paths"])
    assert _traces(sandbox) == before and all(oncall_cli.record(p) == {} for p in paths)

    missing = f"{sandbox.ends.prefix}/db/{unique('missing')}"
    failing = oncall_cli("rotate", missing, "--dry-run", "--json")
    assert failing.code == 1
    (plan,) = failing.json()["paths"]
    assert plan["would_fail"] and "cannot read the secret" in plan["problems"][0]
