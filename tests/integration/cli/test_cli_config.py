"""``rotators`` and ``check-config`` as real subprocesses: every problem listed, right exit code."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from orchestrator.local.processes import free_port
from orchestrator.local.sandbox import Sandbox
from tests.fixtures.stack import OnCallCli, unique
from tests.integration.cli.test_cli_incidents import assert_no_log_lines

pytestmark = pytest.mark.integration


def test_rotators_lists_plugins_with_strategies_and_schemas(oncall_cli: OnCallCli) -> None:
    result = oncall_cli("rotators", "--json")
    assert result.code == 0, result
    plugins = {p["name"]: p for p in result.json()}
    assert plugins["random-password"]["strategy"] == "vault-only"
    assert plugins["salesforce-oauth"]["strategy"] == "issuer"
    assert "app_id" in plugins["salesforce-oauth"]["options_schema"]["properties"]
    built_ins = {
        "mysql-password": ("updater", {"host", "username", "account_host", "ca_file"}),
        "mysql-dual": ("issuer", {"host", "users", "admin_secret_path", "verify_identity"}),
        "redis-acl": ("issuer", {"host", "username", "users", "acl_save", "tls"}),
    }
    for name, (strategy, options) in built_ins.items():
        assert plugins[name]["strategy"] == strategy
        assert options <= set(plugins[name]["options_schema"]["properties"]), name
    plain = oncall_cli("rotators")
    assert (
        "salesforce-oauth  strategy=issuer" in plain.out
        and "app_id: string (required)" in plain.out
    )
    assert "mysql-dual  strategy=issuer  tells usage" in plain.out


def test_check_config_passes_on_a_good_stack(sandbox: Sandbox, oncall_cli: OnCallCli) -> None:
    sandbox.add_password(unique("cfg"), scheduled=False)
    token = oncall_cli.box.ends.worker_token
    result = oncall_cli("check-config", "--json", SCAIVAULT_TOKEN=token)
    assert result.code == 0, result
    report = result.json()
    assert report["ok"] is True and report["problems"] == []
    assert any("write not tested" in line for line in report["passed"])
    probed = oncall_cli("check-config", "--json", "--probe-write", SCAIVAULT_TOKEN=token)
    assert probed.code == 0, probed
    assert any("may read and write" in line for line in probed.json()["passed"])
    assert any("option admin_secret_path: the token may read" in x for x in report["passed"])
    assert "configuration is OK" in oncall_cli("check-config").out
    sha = hashlib.sha256(sandbox.ends.routing_file.read_bytes()).hexdigest()[:12]
    workers = [line for line in report["passed"] if line.startswith("worker ")]
    assert workers and all(f"(sha256 {sha}, loaded" in line for line in workers), report
    assert any(line.startswith("beat ") and "alive" in line for line in report["passed"])


def test_check_config_lists_every_problem_at_once(
    sandbox: Sandbox, oncall_cli: OnCallCli, tmp_path: Path
) -> None:
    routing = tmp_path / "rotation.toml"
    routing.write_text(
        '[[rules]]\nmatch = "a/*"\nrotator = "no-such-rotator"\n\n'
        '[[rules]]\nmatch = "b/*"\nrotator = "random-password"\ngrace_period = "soon"\n'
        "[rules.options]\nlength = 3\n",
        encoding="utf-8",
    )
    result = oncall_cli(
        "check-config", ROTATOR_CONFIG=str(routing), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert result.code == 2, result
    text = result.out
    assert "no-such-rotator" in text and "grace_period" in text and "length" in text
    assert "Redis at" in text and "unreachable" in text
    assert text.count("PROBLEM") >= 4


def test_check_config_reports_reachability_and_permissions(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    sandbox.add_password(unique("perm"), scheduled=False)
    policy = sandbox.admin("POST", "/v1/policies", {
        "name": "read-only", "description": "reads but may not write",
        "rules": [{"path_pattern": f"{sandbox.ends.prefix}/**", "permissions": ["read", "list"]}],
    })  # fmt: skip
    sandbox.admin("POST", f"/v1/policies/{policy['id']}/bindings", {
        "identity_type": "service_account", "identity_id": "sa:read-only",
    })  # fmt: skip
    reader = sandbox.admin(
        "POST", "/v1/_emulator/tokens", {"identity": "sa:read-only", "ttl": "1h"}
    )
    before = {p: sandbox.read(p)["version"] for p in sandbox.originals}
    read_only = oncall_cli("check-config", SCAIVAULT_TOKEN=reader["token"])
    assert read_only.code == 0, read_only  # nothing is written, so writing is not tested
    assert "write not tested" in read_only.out
    assert {p: sandbox.read(p)["version"] for p in sandbox.originals} == before
    denied = oncall_cli("check-config", "--probe-write", SCAIVAULT_TOKEN=reader["token"])
    assert denied.code == 1, denied
    assert "the token may not write" in denied.out and "PROBLEM" in denied.out

    down = oncall_cli(
        "check-config",
        SCAIVAULT_URL=f"http://127.0.0.1:{free_port()}",
        SCAIVAULT_RETRY_DEADLINE="1",
    )
    assert down.code == 1 and "PROBLEM" in down.out

    bad_env = oncall_cli(
        "check-config", "--json", ROTATOR_SEAL_KEY="not-a-key", REDIS_URL="http://x"
    )
    assert bad_env.code == 2
    problems = bad_env.json()["problems"]
    assert any("ROTATOR_SEAL_KEY" in p for p in problems) and any(
        "REDIS_URL" in p for p in problems
    )


def test_check_config_keeps_checking_after_a_bad_rule_and_warns_about_unrouted_secrets(
    sandbox: Sandbox, oncall_cli: OnCallCli, tmp_path: Path
) -> None:
    """A misspelled option used to hide every other check; a dropped wildcard was "OK"."""
    prefix = sandbox.ends.prefix
    sandbox.add_password(unique("typo"), scheduled=False)
    sandbox.add_salesforce(unique("dropped"), scheduled=False)
    routing = tmp_path / "rotation.toml"
    routing.write_text(
        f'[[rules]]\nmatch = "{prefix}/db/*"\nrotator = "random-password"\n'
        "[rules.options]\nlenght = 30\n\n"
        f'[[rules]]\nmatch = "{prefix}/salesforce"\nrotator = "random-pasword"\n\n'
        f'[[rules]]\nmatch = "{prefix}/salesforce"\nrotator = "random-password"\n',
        encoding="utf-8",
    )
    result = oncall_cli("check-config", ROTATOR_CONFIG=str(routing))
    assert result.code == 2, result
    out = result.out
    assert "rule 1: options.lenght: Extra inputs are not permitted; did you mean 'length'?" in out
    assert "'random-pasword': did you mean 'random-password'? no such rotator" in out
    assert "ok       rule 3" in out, "the valid rule is still checked"
    assert f"WARNING  rule 3 ('{prefix}/salesforce'): no secret this token may list" in out
    assert "is under" in out and "no rule matches it, so it is never rotated" in out
    assert out.rstrip().splitlines()[-1].startswith("next: fix each PROBLEM line")
    stale = next(line for line in out.splitlines() if "not this routing file's content" in line)
    assert re.search(r"\(last heartbeat \d+s ago\)$", stale), stale
    report = oncall_cli("check-config", "--json", ROTATOR_CONFIG=str(routing)).json()
    assert report["warnings"] and report["next"].startswith("fix each PROBLEM")


def test_check_config_against_an_unavailable_scaivault_prints_no_log_lines(
    sandbox: Sandbox, oncall_cli: OnCallCli
) -> None:
    sandbox.add_password(unique("down"), scheduled=False)
    faults = {"match": f"{sandbox.ends.prefix}/**", "code": "service_unavailable"}
    sandbox.admin("POST", "/v1/_emulator/faults", {**faults, "count": 100})
    try:
        down = oncall_cli("check-config", "--json", SCAIVAULT_RETRY_DEADLINE="2")
    finally:
        sandbox.admin("DELETE", "/v1/_emulator/faults")
    assert down.code == 1, down
    assert any("503" in p or "unavailable" in p for p in down.json()["problems"]), down
    assert_no_log_lines(down)


def test_check_config_refuses_the_default_redis_nobody_named(oncall_cli: OnCallCli) -> None:
    """Other read commands refuse it; check-config used to give an all-clear from it."""
    refused = oncall_cli("check-config", "--json", without=("REDIS_URL",))
    assert refused.code == 2, refused
    problems = refused.json()["problems"]
    assert any("REDIS_URL is not set" in p and "ROTATOR_CLI_ALLOW_DEFAULTS" in p for p in problems)
    assert any("set -a; . demo.env; set +a" in p for p in problems), problems
    assert not any(line.startswith("Redis at") for line in refused.json()["passed"])
