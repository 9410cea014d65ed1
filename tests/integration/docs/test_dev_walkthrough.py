"""The plugin guide's local-stack walk-through runs as written: the ``sh`` blocks of
docs/writing-rotators.md#trying-it-on-a-local-stack, in one bash, end in a ``done`` rotation.

Only what must differ on a test machine is changed, each change one pattern of :func:`changes`:
the example issuer is already installed (the ``issuer_site`` fixture, on ``PYTHONPATH``), the
fake key service takes a free port instead of 8300, and the two long-running commands (the
fake, and ``dev``, which runs in the foreground until Ctrl-C) write their output to a file while
the script waits for the line each prints when it is up. The second block ("in another
terminal") then runs as it stands; the test waits for the finalize the guide says follows the
grace period, and stops the stack as Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.local.processes import free_port
from tests.fixtures.docs import REPO
from tests.fixtures.issuer import site_env

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "writing-rotators.md"
SECTION = "## Trying it on a local stack"
#: The walk-through ends where the guide names this test.
END = "`tests/integration/docs/test_dev_walkthrough.py` runs"
PATH = "apps/billing/api-key"
#: ``ready NAME PID LINE``: keep PID in NAME.pid; wait for LINE in NAME.out while PID lives.
READY = (
    'ready() { echo "$2" > "$1.pid"; '
    'until grep -qF "$3" "$1.out" 2>/dev/null; do kill -0 "$2" || exit 1; sleep 0.2; done; }'
)
#: Written when the last command of the walk-through has run; the script then waits for the
#: processes it started in the background, so that it reaps them when they are stopped.
FINISHED = "walkthrough.finished"


def walkthrough() -> list[str]:
    """The ``sh`` blocks of the section, up to the sentence naming this test."""
    text = GUIDE.read_text(encoding="utf-8").split(f"\n{SECTION}\n", 1)[1].split(END, 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def changes(port: int) -> list[tuple[str, str]]:
    """(pattern, replacement) for the lines a test machine needs otherwise."""
    return [
        (r"^pip install \./tests/example_issuer\b.*$", ": the example issuer is on PYTHONPATH"),
        (
            r"^(python -m example_issuer\.fake .*?) &\s*$",
            r'\1 > keys.out 2>&1 &\nready keys "$!" fake_keys_ready',
        ),
        (
            r"^(scaivault-rotator dev --routing \S+ --workdir \S+)\s+#.*$",
            r'\1 > dev.out 2>&1 &\nready dev "$!" "Press Ctrl-C to stop everything."',
        ),
        (r"\b8300\b", str(port)),
    ]


def script(port: int) -> str:
    text = "\n".join(walkthrough())
    for pattern, replacement in changes(port):
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count, f"the walk-through no longer matches {pattern!r}"
    return f"set -e\n{READY}\n{text}\ntouch {FINISHED}\nwait\n"


def _stop(pid: int) -> None:
    """SIGTERM ``pid`` and wait until it is gone (``dev`` stops its stack first)."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
    except ProcessLookupError:
        return


def wait_for(check: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_the_local_stack_walkthrough_runs_as_written(issuer_site: Path, tmp_path: Path) -> None:
    blocks = walkthrough()
    assert len(blocks) == 2, "the walk-through is the dev block and the other terminal's block"
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = site_env(issuer_site, PATH=path)
    workdir = tmp_path
    output = workdir / "walkthrough.out"
    with output.open("wb") as out:
        bash = subprocess.Popen(
            ["bash", "-c", script(free_port())], cwd=workdir, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        finished = wait_for(
            lambda: (workdir / FINISHED).exists() or bash.poll() is not None,
            "the walk-through's commands",
            timeout=400,
        )
        assert finished and (workdir / FINISHED).exists(), (
            f"the walk-through stopped (exit {bash.returncode}); see {output}"
        )
        cli_env = dict(env)
        pairs = (workdir / "dev" / "dev.env").read_text(encoding="utf-8").splitlines()
        cli_env.update(pair.split("=", 1) for pair in pairs)
        record = wait_for(lambda: _finished(cli_env, workdir), "the finalize", timeout=180)
        assert record["state"] == "done", record
    finally:
        for name in ("dev", "keys"):
            pid = workdir / f"{name}.pid"
            if pid.exists():
                _stop(int(pid.read_text(encoding="utf-8")))
        bash.wait(timeout=120)


def _finished(env: dict[str, str], cwd: Path) -> dict[str, Any] | None:
    status = subprocess.run(
        ["scaivault-rotator", "status", PATH, "--json"], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    record: dict[str, Any] = json.loads(status.stdout) if status.returncode == 0 else {}
    return record if record.get("state") in {"done", "failed", "needs_attention"} else None
