"""``scaivault-rotator dev``: a plugin author's local stack, end to end with the example issuer.

The plugin is installed into a directory of its own (never the project's virtualenv) and put on
``PYTHONPATH``, as a plugin installed next to scaivault-rotator would be; its target is the
plugin's fake key service, a real HTTP server in this process. The stack starts with a routing
file that does not route the secret yet; a broken rule is refused by the running worker (and
``rotate --wait`` says so, naming the rule), the fixed rule is picked up without a restart,
and the rotation goes through to ``done``. Ctrl-C stops every process the stack started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from example_issuer.fake import FakeKeyService

from orchestrator.local.processes import ChildProcess, cli_argv
from tests.fixtures.issuer import REPO_ROOT, site_env

pytestmark = pytest.mark.integration

PATH = "apps/billing/api-key"
ADMIN_PATH = "dev/key-service-admin"
OTHER_RULE = '[[rules]]\nmatch = "apps/other/*"\nrotator = "random-password"\n'


def issuer_rule(base_url: str, option: str = "base_url") -> str:
    return (
        '[[rules]]\nmatch = "apps/billing/*"\nrotator = "example-issuer"\ngrace_period = "2s"\n'
        f'[rules.options]\n{option} = "{base_url}"\nadmin_secret_path = "{ADMIN_PATH}"\n'
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


@dataclass
class Dev:
    """A running ``dev`` process, what it printed, and the CLI environment it wrote."""

    child: ChildProcess
    ready: dict[str, Any]
    env: dict[str, str]
    outputs: list[str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            cli_argv(*args), env=self.env, cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        self.outputs += [done.stdout, done.stderr]
        return done

    def log(self, name: str) -> str:
        path = Path(self.ready["workdir"]) / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def put(self, path: str, data: dict[str, Any]) -> None:
        response = httpx.put(
            f"{self.env['SCAIVAULT_URL']}/v1/secrets/{path}",
            json={"data": data, "secret_type": "json"},
            headers={"Authorization": f"Bearer {self.env['SCAIVAULT_TOKEN']}"},
            timeout=10.0,
        )
        assert response.status_code < 300, response.status_code

    def read(self, path: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.env['SCAIVAULT_URL']}/v1/secrets/{path}",
            headers={"Authorization": f"Bearer {self.env['SCAIVAULT_TOKEN']}"},
            timeout=10.0,
        )
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def keys() -> Iterator[FakeKeyService]:
    service = FakeKeyService().start()
    yield service
    service.close()


@pytest.fixture
def dev(issuer_site: Path, tmp_path: Path) -> Iterator[Dev]:
    routing = tmp_path / "my.toml"
    routing.write_text(OTHER_RULE, encoding="utf-8")
    argv = cli_argv("dev", "--routing", str(routing), "--workdir", str(tmp_path / "dev"), "--json")
    child = ChildProcess("dev", argv, tmp_path / "dev-cli.log", env=site_env(issuer_site))
    child.start()
    try:
        child.wait_log("dev_stack_ready", timeout=180)
        line = next(x for x in child.log_tail(1000).splitlines() if "dev_stack_ready" in x)
        ready = json.loads(line)
        pairs = Path(ready["env_file"]).read_text(encoding="utf-8").splitlines()
        env = site_env(issuer_site, **dict(p.split("=", 1) for p in pairs))
        yield Dev(child, ready, env, [])
    finally:
        child.stop(timeout=60)


def test_an_author_rotates_with_the_example_issuer_on_the_dev_stack(
    dev: Dev, keys: FakeKeyService
) -> None:
    routing = Path(dev.env["ROTATOR_CONFIG"])
    assert oct(Path(dev.ready["env_file"]).stat().st_mode & 0o777) == "0o600"
    old = keys.create_key()
    dev.put(PATH, {"key_id": old.id, "api_key": old.secret, "owner": "billing"})
    dev.put(ADMIN_PATH, {"token": keys.admin_token})

    # A rule the running worker refuses (a misspelt option): named in the skip and the hint.
    routing.write_text(OTHER_RULE + issuer_rule(keys.url, option="base_ur"), encoding="utf-8")
    wait_for(lambda: "routing_reload_rejected" in dev.log("worker"), "the worker to refuse it")
    refused = dev.cli("rotate", PATH, "--wait")
    assert refused.returncode == 1, refused.stderr
    assert "has rule 2 (match 'apps/billing/*')" in refused.stderr
    assert "that file is invalid" in refused.stderr and "options.base_ur" in refused.stderr
    assert f"next: rule 2 ('apps/billing/*') of {routing} routes {PATH}" in refused.stderr

    # Fixed: picked up without a restart; check-config reads the *_secret_path option.
    routing.write_text(OTHER_RULE + issuer_rule(keys.url), encoding="utf-8")
    wait_for(lambda: "routing_reloaded" in dev.log("worker"), "the worker to reload")
    checked = dev.cli("check-config")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"option admin_secret_path: the token may read '{ADMIN_PATH}'" in checked.stdout
    rotated = dev.cli("rotate", PATH, "--wait")
    assert rotated.returncode == 0, rotated.stderr

    def finished() -> dict[str, Any] | None:
        status = dev.cli("status", PATH, "--json")
        record: dict[str, Any] = json.loads(status.stdout) if status.returncode == 0 else {}
        return record if record.get("state") in {"done", "failed", "needs_attention"} else None

    record = wait_for(finished, "the finalize")
    assert record["state"] == "done" and record["attempts"] == 1, record
    new = dev.read(PATH)["data"]
    assert new["owner"] == "billing" and new["key_id"] != old.id
    assert keys.accepts(new["key_id"], new["api_key"]) and not keys.accepts(old.id, old.secret)
    secrets = {old.secret, new["api_key"], keys.admin_token, dev.env["SCAIVAULT_TOKEN"]}
    for output in [*dev.outputs, dev.child.log_tail(10_000), dev.log("worker")]:
        assert not any(value in output for value in secrets)


def test_ctrl_c_stops_every_process_of_the_stack(dev: Dev) -> None:
    pids = dev.ready["pids"]
    assert set(pids) == {"emulator", "receiver", "worker", "beat"}
    assert dev.child.proc is not None
    dev.child.proc.send_signal(signal.SIGINT)
    assert dev.child.proc.wait(timeout=120) == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (and reaped)
    assert "stopping every process of the dev stack" in dev.child.log_tail()
