"""deploy/systemd: units that parse, run the real CLI commands, and are hardened."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.settings import Settings, env_names
from tests.fixtures.deploy import (
    DEPLOY,
    THIRD_PARTY_ENV,
    beat_keeps_a_schedule_file,
    check_cli_argv,
    check_stop_signal,
    env_file,
    soft_shutdown_timeout,
    systemd_analyze,
    systemd_unit,
    unit_environment,
    unit_values,
)

SYSTEMD = DEPLOY / "systemd"
ROLES = {"receiver": "serve", "worker": "worker", "beat": "beat"}
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


def _unit(role: str) -> dict[str, list[tuple[str, str]]]:
    return systemd_unit(SYSTEMD / f"scaivault-rotator-{role}.service")


def _service(role: str, key: str) -> str:
    values = unit_values(_unit(role), "Service", key)
    assert len(values) == 1, f"{role}: expected one {key}=, found {values}"
    return values[0]


def _argv(role: str) -> list[str]:
    return shlex.split(_service(role, "ExecStart"))


def _seconds(value: str) -> int:
    return int(value.removesuffix("s"))


@pytest.mark.parametrize("role", ROLES)
def test_exec_start_runs_the_cli_command_of_its_role(role: str) -> None:
    binary, *argv = _argv(role)
    assert Path(binary).name == "scaivault-rotator" and Path(binary).is_absolute()
    assert argv[0] == ROLES[role]
    env = env_file(DEPLOY / "env.example") | unit_environment(_unit(role))
    assert check_cli_argv(argv, env) is None, check_cli_argv(argv, env)


def test_reloading_the_worker_sends_sighup_to_its_main_process_only() -> None:
    """SIGHUP makes the worker re-read its routing file (pool processes would die of it)."""
    assert shlex.split(_service("worker", "ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]


@pytest.mark.parametrize("role", ROLES)
def test_runs_as_an_unprivileged_user_with_an_environment_file(role: str) -> None:
    assert _service(role, "User") not in {"root", "0"}
    assert _service(role, "Group") not in {"root", "0"}
    assert _service(role, "EnvironmentFile").startswith("/etc/scaivault-rotator/")
    known = set(env_names()) | set(THIRD_PARTY_ENV)
    assert set(unit_environment(_unit(role))) <= known


@pytest.mark.parametrize("role", ROLES)
def test_hardening_options(role: str) -> None:
    for key, value in HARDENING.items():
        assert unit_values(_unit(role), "Service", key) == [value], f"{role}: {key}={value}"
    filters = unit_values(_unit(role), "Service", "SystemCallFilter")
    assert "@system-service" in filters
    families = _service(role, "RestrictAddressFamilies").split()
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6"}


@pytest.mark.parametrize("role", ROLES)
def test_restarts_after_any_exit_it_did_not_ask_for(role: str) -> None:
    # Not on-failure: a process that stops by itself is down even when its status says 0.
    assert _service(role, "Restart") == "always"
    assert _seconds(_service(role, "RestartSec")) > 0, "a pause between restarts"


def test_receiver_listens_on_loopback_behind_a_proxy() -> None:
    argv = _argv("receiver")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_worker_stops_with_celerys_soft_shutdown_within_the_stop_timeout() -> None:
    assert _service("worker", "KillMode") == "mixed"
    assert _service("worker", "KillSignal") == "SIGTERM"
    assert check_stop_signal(unit_environment(_unit("worker"))) is None
    limit = Settings.model_fields["rotator_task_time_limit"].default
    assert _seconds(_service("worker", "TimeoutStopSec")) > limit + soft_shutdown_timeout()


def test_beat_has_a_writable_working_directory_if_it_keeps_a_schedule_file() -> None:
    if not beat_keeps_a_schedule_file():
        assert not unit_values(_unit("beat"), "Service", "StateDirectory")
        return
    state = _service("beat", "StateDirectory")
    assert _service("beat", "WorkingDirectory") == f"/var/lib/{state}"


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_worker_and_beat_are_watched_by_systemds_watchdog(role: str) -> None:
    unit = _unit(role)
    assert unit_values(unit, "Service", "Type") == ["notify"]
    assert unit_values(unit, "Service", "NotifyAccess") == ["main"]
    [watchdog] = unit_values(unit, "Service", "WatchdogSec")
    interval = Settings.model_fields["rotator_heartbeat_interval"].default
    assert int(watchdog.removesuffix("s")) >= 3 * interval, "several heartbeats per period"


def test_units_belong_to_the_target() -> None:
    for role in ROLES:
        assert unit_values(_unit(role), "Install", "WantedBy") == ["scaivault-rotator.target"]
        assert unit_values(_unit(role), "Unit", "PartOf") == ["scaivault-rotator.target"]
    target = systemd_unit(SYSTEMD / "scaivault-rotator.target")
    assert unit_values(target, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.skipif(systemd_analyze() is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_nothing_but_the_missing_binary(tmp_path: Path) -> None:
    for unit in SYSTEMD.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    done = subprocess.run(
        [str(systemd_analyze()), "verify", "--man=no", *map(str, sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        check=False,
    )
    # The install path of the virtualenv does not exist on a build machine: that one complaint
    # is expected. Anything else (unknown keys, bad values) is a broken unit.
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "/scaivault-rotator is not executable" not in line
    ]
    assert problems == []


@pytest.mark.skipif(systemd_analyze() is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("role", ROLES)
def test_exposure_score_is_low(role: str) -> None:
    unit = SYSTEMD / f"scaivault-rotator-{role}.service"
    done = subprocess.run(
        [str(systemd_analyze()), "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "Unknown option" in done.stderr or "unrecognized option" in done.stderr:
        pytest.skip("this systemd-analyze cannot score units offline")
    assert done.returncode == 0, done.stdout[-600:] + done.stderr[-600:]
