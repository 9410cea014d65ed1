"""``scaivault-rotator demo`` as a user runs it: a subprocess on local defaults that exits 0,
prints the timeline, leaks no secret value anywhere, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from orchestrator.local import demo, demo_postgres
from orchestrator.local.postgres_server import INSTALL_HINT, find_bindir
from orchestrator.local.processes import cli_argv

pytestmark = pytest.mark.integration

SECRET_KEYS = {"password", "client_secret"}


def _demo_env() -> dict[str, str]:
    """The user's environment without any of our settings: the demo must bring its own."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("SCAIVAULT_", "ROTATOR_", "REDIS"))
    }


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SECRET_KEYS and isinstance(item, str) and len(item) >= 8:
                yield item
            else:
                yield from _secret_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_values(item)


def _leftover_processes(workdir: Path, *others: str | None) -> list[str]:
    """Processes still running in or on ``workdir`` (or naming one of ``others`` folders)."""
    found = []
    folders = [str(workdir), *(other for other in others if other)]
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if any(f in cmdline for f in folders) or str(workdir) == (proc.info.get("cwd") or ""):
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


#: Whether the demo has its PostgreSQL part here (server binaries installed; psycopg is in dev).
POSTGRES = find_bindir() is not None


def test_demo_rotates_end_to_end_and_leaks_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = subprocess.run(
        cli_argv("demo", "--json", "--workdir", str(workdir)),
        env=_demo_env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["ok"] is True and len(summary["checks"]) == (12 if POSTGRES else 7)
    timeline = done.stderr
    expected_lines = (
        "private redis-server",
        "signed rotation.due",
        "receiver answered 202",
        "state grace",
        "rotation_finalized",
        "state done",
        "PASS",
        "demo OK",
    )
    if POSTGRES:  # finalize waits for the connected consumer, who then moves to orders_b
        expected_lines += (
            "orders-api        connected to PostgreSQL as orders_a",
            "finalize_deferred step=finalize detail=1 session of orders_a from 127.0.0.1 "
            "(orders-api)",
            "re-read the secret and reconnected as orders_b",
            "PASS  postgres/orders: finalize waited while orders-api was connected as orders_a",
        )
    for expected in expected_lines:
        assert expected in timeline, expected
    assert "FAIL" not in timeline and "Traceback" not in timeline

    # Every secret value the demo created or minted, from the emulator's and the fake's state.
    values: set[str] = set()
    for state in ("emulator-state.json", "salesforce-state.json"):
        values |= set(_secret_values(json.loads((workdir / state).read_text())))
    found = len(values)  # (counted first: an assertion must not print the values)
    assert found >= 5, "2 passwords, the old and new Salesforce secrets, the admin secret"
    if POSTGRES:  # and the PostgreSQL passwords: orders_a's, orders_b's, the admin's
        assert (
            found >= 8 and "LOG:  statement: ALTER ROLE" in (workdir / "postgres.log").read_text()
        )
    haystacks = {"demo output": done.stdout + done.stderr}
    for log in workdir.glob("*.log"):
        haystacks[log.name] = log.read_text(errors="replace")
    for aof in (workdir / "redis").rglob("*"):
        if aof.is_file():
            haystacks[f"redis {aof.name}"] = aof.read_bytes().decode("latin-1")
    for name, text in haystacks.items():
        leaked = sum(1 for v in values if v in text)
        assert leaked == 0, f"{leaked} secret value(s) in {name}"
    assert not _leftover_processes(workdir, summary["postgres_dir"])


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cli_argv("demo", "--workdir", str(workdir)),
            env=_demo_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "state grace" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert _leftover_processes(workdir), "the stack should be running now"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted: stopping every process" in log.read_text()
    assert not _leftover_processes(workdir)


def test_a_failed_demo_says_why_shows_logs_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = subprocess.run(
        cli_argv("demo", "--timeout", "0.1", "--workdir", str(workdir)),
        env=_demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done.stdout[-3000:]
    assert "error: the rotations did not finish within 0s" in done.stdout
    assert "--- last lines of worker" in done.stdout and "state and logs kept in" in done.stdout
    assert not _leftover_processes(workdir)


def test_keep_running_writes_everything_to_drive_the_stack_into_demo_env(tmp_path: Path) -> None:
    """The emulator's admin token (for fault injection) used to be only in the process list."""
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cli_argv("demo", "--keep-running", "--workdir", str(workdir)),
            env=_demo_env(), stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "The stack is up" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        env_file = workdir / "demo.env"
        assert "EMULATOR_ADMIN_TOKEN for the emulator's admin API" in log.read_text()
        assert env_file.stat().st_mode & 0o777 == 0o600
        settings = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
        assert set(settings) >= {"REDIS_URL", "SCAIVAULT_URL", "EMULATOR_ADMIN_TOKEN"}
        env = {**_demo_env(), **settings}
        status = subprocess.run(
            cli_argv("status"), env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert status.returncode == 0 and "asked redis" in status.stderr, status.stderr
        faults = httpx.get(
            settings["SCAIVAULT_URL"] + "/v1/_emulator/faults",
            headers={"Authorization": f"Bearer {settings['EMULATOR_ADMIN_TOKEN']}"},
        )
        assert faults.status_code == 200, faults.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "Ctrl-C is how a kept stack is meant to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _leftover_processes(workdir)


def test_without_postgresql_the_demo_says_it_skipped_that_part_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_postgres, "find_bindir", lambda: None)
    code = demo.run(keep_running=False, workdir=tmp_path / "demo", timeout=0.1, as_json=False)
    assert code == 1  # the short timeout ends it early; the skip is said before anything else
    out = capsys.readouterr().out
    assert f"postgres-dual part skipped: {INSTALL_HINT}" in out
    assert "postgres/orders" not in out
    assert not _leftover_processes(tmp_path / "demo")


def test_without_psycopg_the_postgres_part_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "orchestrator.local.postgres_target", None)
    target, why = demo_postgres.postgres_part(tmp_path)
    assert target is None and "pip install 'scaivault-rotator[postgres]'" in why
