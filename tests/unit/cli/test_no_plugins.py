"""On-call's commands never import a rotator plugin nor the plugin loader: on-call's laptop
needs neither the plugins nor their dependencies (``rotate --dry-run`` is the one command that
loads them, docs/on-call.md)."""

from __future__ import annotations

import json
import subprocess
import sys

#: The plugin contract every part may import; any other ``rotators`` module is a plugin or the
#: conformance kit.
CONTRACT = frozenset(
    {
        "rotators",
        "rotators.contract",
        "rotators.duration",
        "rotators.errors",
        "rotators.secret",
        "rotators.versions",
    }
)
PROBE = """
import json, sys
import orchestrator.cli.grace, orchestrator.cli.session, orchestrator.cli.main
from orchestrator.cli.main import cli
try:
    cli.main(["status", "--help"], prog_name="scaivault-rotator")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules() -> list[str]:
    """Every module a fresh interpreter holds after importing on-call's CLI modules and
    running ``scaivault-rotator status --help``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_on_calls_cli_imports_no_plugin_and_no_plugin_loader() -> None:
    modules = loaded_modules()
    assert "orchestrator.cli.grace" in modules and "orchestrator.routing" in modules
    plugins = [m for m in modules if m.startswith("rotators") and m not in CONTRACT]
    assert plugins == []
    assert "orchestrator.plugins" not in modules
