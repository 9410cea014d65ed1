"""Shell completion through click's real protocol (what the sourced bash script runs): secret
paths come from the deployment's Redis, and a missing Redis completes nothing without a word."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis

from orchestrator.local.processes import cli_argv, free_port
from orchestrator.state import keys

pytestmark = pytest.mark.integration


def complete(words: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    """What bash completion asks for ``scaivault-rotator WORDS<Tab>``."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "_SCAIVAULT_ROTATOR_COMPLETE": "bash_complete",
        "COMP_WORDS": f"scaivault-rotator {words}",
        "COMP_CWORD": str(len(words.split(" "))),
    }
    argv = cli_argv()
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_paths_complete_from_the_rotations_redis_knows(
    redis_client: redis.Redis, redis_url: str
) -> None:
    for path in ("apps/orders/db", "apps/billing/db", "integrations/salesforce/oauth"):
        redis_client.set(keys.last(path), "rot-x")
    done = complete("status apps/", redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,apps/billing/db", "plain,apps/orders/db"]
    assert complete("finalize integ", redis_url).stdout.splitlines() == [
        "plain,integrations/salesforce/oauth"
    ]
    assert "plain,--now" in complete("finalize --", redis_url).stdout.splitlines()


def test_without_redis_paths_complete_to_nothing_quietly() -> None:
    done = complete("history apps/", f"redis://127.0.0.1:{free_port()}/0")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "", "")
