"""deploy/compose.yaml: valid against the compose-spec schema, secure, and matching the CLI."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from orchestrator.local.emulator.app import ROUTES as EMULATOR_ROUTES
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings, env_names
from tests.fixtures.deploy import (
    DEPLOY,
    REPO,
    check_cli_argv,
    check_stop_signal,
    cli_envvars,
    env_file,
    load_yaml,
    option_value,
    soft_shutdown_timeout,
)

SCHEMA = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text(encoding="utf-8"))
IMAGE_SERVICES = ("emulator", "receiver", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "compose.yaml")
    assert isinstance(data, dict)
    return data


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def test_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert _errors(compose) == []


def test_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["restart_policy"] = "always"  # not a compose key
    broken["services"]["redis"]["depends_on"] = {"worker": {"condition": "when_ready"}}
    errors = _errors(broken)
    assert any("restart_policy" in e for e in errors), errors
    assert any("when_ready" in e for e in errors), errors


def test_redis_keeps_an_append_only_file_and_never_evicts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert option_value(command, "--appendonly") == "yes"
    assert option_value(command, "--appendfsync") == "everysec"
    assert option_value(command, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])
    assert "ports" not in compose["services"]["redis"], "Redis must not be published"


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_rotator_services_match_the_cli(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    env = env_file(DEPLOY / "env.example") | dict(service.get("environment", {}))
    assert check_cli_argv(service["command"], env) is None, check_cli_argv(service["command"], env)


@pytest.mark.parametrize("name", [*IMAGE_SERVICES, "redis"])
def test_every_service_is_locked_down(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert not str(service["user"]).startswith(("0", "root")), service["user"]
    assert "privileged" not in service


@pytest.mark.parametrize("name", [*IMAGE_SERVICES, "redis"])
def test_every_service_restarts_after_any_exit(compose: dict[str, Any], name: str) -> None:
    # Not on-failure: a process that stops by itself is down even when its status says 0.
    service = compose["services"][name]
    assert service["restart"] in {"always", "unless-stopped"}
    policy = service.get("deploy", {}).get("restart_policy", {})
    assert policy.get("condition", "any") == "any", "no restart_policy narrowing it"


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_rotator_services_take_settings_from_the_uncommitted_env_file(
    compose: dict[str, Any], name: str
) -> None:
    assert compose["services"][name]["env_file"] == [{"path": ".env", "required": True}]
    if not git_checkout():
        pytest.skip("not a git checkout (e.g. an sdist): git cannot say what it ignores")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False
    ).returncode
    assert ignored == 0, "deploy/.env must be git-ignored"


def git_checkout() -> bool:
    """True when git is installed and the repository root is the top of a git work tree."""
    git = shutil.which("git")
    if git is None:
        return False
    done = subprocess.run(
        [git, "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and Path(done.stdout.strip()).resolve() == REPO.resolve()


def test_env_example_holds_placeholders_and_only_known_names() -> None:
    values = env_file(DEPLOY / "env.example")
    known = set(env_names()) | cli_envvars()
    assert set(values) <= known, set(values) - known
    for name in ("SCAIVAULT_TOKEN", "SCAIVAULT_WEBHOOK_SECRET", "ROTATOR_SEAL_KEY"):
        assert values[name] == "change-me", f"{name} must be a placeholder in env.example"


def test_rotator_services_use_the_image_of_this_release(compose: dict[str, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for name in IMAGE_SERVICES:
        assert compose["services"][name]["image"] == f"scaivault-rotator:{version['version']}"
        assert compose["services"][name]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_worker_scales_and_beat_does_not(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N must work"
    beat = compose["services"]["beat"]
    assert beat["deploy"]["replicas"] == 1
    runs_beat = [n for n, s in compose["services"].items() if s.get("command", [""])[0] == "beat"]
    assert runs_beat == ["beat"], "exactly one service may run beat"


def test_worker_stop_grace_outlasts_the_task_time_limit(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    limit = Settings.model_fields["rotator_task_time_limit"].default
    assert _seconds(worker["stop_grace_period"]) > limit + soft_shutdown_timeout()
    assert check_stop_signal(worker.get("environment", {})) is None


def test_health_checks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") or check.get("disable") is True, f"{name}: no health check"
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] == "service_healthy"
            assert not services[dependency].get("healthcheck", {}).get("disable")
    for name in ("receiver", "worker", "beat"):
        assert "redis" in services[name]["depends_on"], f"{name} needs Redis first"
    receiver_port = option_value(services["receiver"]["command"], "--port")
    assert f"127.0.0.1:{receiver_port}/readyz" in " ".join(
        services["receiver"]["healthcheck"]["test"]
    )
    emulator_port = option_value(services["emulator"]["command"], "--port")
    emulator_check = " ".join(services["emulator"]["healthcheck"]["test"])
    assert f"127.0.0.1:{emulator_port}/healthz" in emulator_check
    assert "/healthz" in {route.path for route in EMULATOR_ROUTES}
    for role in ("worker", "beat"):
        test = services[role]["healthcheck"]["test"]
        assert test == ["CMD", "scaivault-rotator", "health", role]
        assert check_cli_argv(test[2:], env_file(DEPLOY / "env.example")) is None


def test_mounted_routing_file_is_valid(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["worker"]["volumes"]
    source = next(m.split(":")[0] for m in mounts if "rotation.toml" in m)
    table = RoutingTable.load(DEPLOY / source)
    assert table.rules, "the example routing file has no rule"
