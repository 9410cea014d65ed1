"""The example plugin, installed as a separate distribution, is found and run by a real worker.

``tests/example_plugin`` is copied to a temp dir and ``pip install --target``-ed there (never
into the project's virtualenv); the worker, beat and CLI get that dir on ``PYTHONPATH`` and
find the rotator through its ``scaivault.rotators`` entry point, as they would any plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from orchestrator.local.processes import ChildProcess, Stack, cli_argv
from rotators.testing import Conformance, Scenario
from tests.fixtures.emulator import Emulator

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = REPO_ROOT / "tests" / "example_plugin"
PATH = "apps/billing/api-token"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed ``scaivault-example-token`` distribution."""
    work = tmp_path_factory.mktemp("example-plugin")
    source = work / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )  # fmt: skip
    return site


def plugin_env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCAIVAULT_", "ROTATOR_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT)])
    env.update(extra)
    return env


def run(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_distribution_registers_its_entry_point(plugin_site: Path) -> None:
    assert list(plugin_site.glob("scaivault_example_token-1.0.0.dist-info"))
    result = run(cli_argv("rotators", "--json"), plugin_env(plugin_site))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "example-token" in text and "vault-only" in text
    without = run(cli_argv("rotators", "--json"), plugin_env(plugin_site.parent / "no-plugins"))
    assert "example-token" not in without.stdout


def test_the_plugins_own_suite_runs_the_conformance_kit(plugin_site: Path) -> None:
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        plugin_env(plugin_site),
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout


def test_the_kit_in_process_against_the_installed_plugin(plugin_site: Path) -> None:
    sys.path.insert(0, str(plugin_site))
    try:
        from example_token_rotator import ExampleTokenRotator  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(plugin_site))

    class Format:
        def setup(self) -> Scenario:
            return Scenario(
                data={"token": "zz_" + "1" * 32}, options={"prefix": "zz_", "nbytes": 16}
            )

        def is_valid(self, data: Any) -> bool:
            return str(data.get("token", "")).startswith("zz_") and len(data["token"]) == 35

    assert Conformance(ExampleTokenRotator, Format()).run()


@pytest.fixture
def plugin_stack(
    plugin_site: Path, emulator: Emulator, redis_url: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A worker and beat (plus the CLI's env) that know the example plugin only via PYTHONPATH."""
    routing = tmp_path / "rotation.toml"
    routing.write_text(
        '[[rules]]\nmatch = "apps/billing/*"\nrotator = "example-token"\ngrace_period = "1s"\n'
        '[rules.options]\nprefix = "bl_"\nnbytes = 20\nfield = "token"\n',
        encoding="utf-8",
    )
    env = plugin_env(
        plugin_site,
        SCAIVAULT_URL=emulator.url,
        SCAIVAULT_TOKEN=emulator.admin_token,
        REDIS_URL=redis_url,
        ROTATOR_CONFIG=str(routing),
        ROTATOR_SEAL_KEY=Fernet.generate_key().decode(),
        ROTATOR_METRICS_PORT="0",
        ROTATOR_SWEEP_INTERVAL="1",
        ROTATOR_RETRY_BACKOFF_MAX="2",
        ROTATOR_MIN_GRACE="0s",
    )
    with Stack() as stack:
        for name, argv in [("worker", cli_argv("worker", "-c", "1")), ("beat", cli_argv("beat"))]:
            child = ChildProcess(name, argv, tmp_path / f"{name}.log", env=env, cwd=tmp_path)
            stack.add(child)
            child.start()
        yield env


def test_a_real_worker_rotates_with_the_plugin(
    plugin_stack: dict[str, str], emulator: Emulator
) -> None:
    old_token = "bl_" + "a" * 40
    emulator.put_secret(PATH, {"service": "billing", "token": old_token})
    started = run(cli_argv("rotate", PATH, "--json"), plugin_stack)
    assert started.returncode == 0, started.stdout + started.stderr

    deadline = time.monotonic() + 90
    while True:
        status = run(cli_argv("status", PATH, "--json"), plugin_stack)
        record = json.loads(status.stdout) if status.returncode == 0 else {}
        if record.get("state") in {"done", "failed", "needs_attention"}:
            break
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(0.5)
    assert record["state"] == "done", record

    current = emulator.get_secret(PATH)
    assert current["version"] == 2 and current["metadata"]["rotator"] == "example-token"
    token = current["data"]["token"]
    assert token.startswith("bl_") and len(token) == 43 and token != old_token
    assert current["data"]["service"] == "billing"
    for output in (started.stdout, started.stderr, status.stdout, status.stderr):
        assert token not in output and old_token not in output
