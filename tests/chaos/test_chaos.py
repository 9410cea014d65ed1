"""The crash and fault scenario in a bounded form, as part of the normal test run.

One run of :mod:`tests.chaos.harness` (24 secrets, 4 of them PostgreSQL logins and 4 Redis ACL
logins with connected consumers, 3 worker SIGKILLs, one Redis restart with rotations in
flight, ScaiVault and Salesforce faults on, workers supervised as ``deploy/`` does)
is shared by the tests below; each invariant is its own test, so a failure names the invariant
and lists what broke it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.local.processes import REDIS_INSTALL_HINT
from tests.chaos.harness import run
from tests.chaos.report import Params, Report, summary

pytestmark = pytest.mark.integration

#: The bounded scenario: small enough for CI, with every kind of fault.
BOUNDED = Params(
    secrets=24,
    seed=7,
    kills=3,
    pool_kills=2,
    fault_rate=0.2,
    duration=20.0,
    grace="5s",
    waves=4,
    manual_share=0.25,
    settle_timeout=120.0,
    postgres=4,
    acl=4,
)

#: The run's timeline and summary, added to every failure message.
TIMELINE: list[str] = []

CHECKS = (
    "every due event produced exactly one new version",
    "every current version works at its target",
    "every old credential revoked after its grace and once unused, not before",
    "no rotation left in a non-terminal state",
    "permanent failures are failed with a reason",
    "no secret sentinel in logs, Redis, broker messages or metrics",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    """One bounded chaos run for this module; its summary goes to the test output."""
    if shutil.which("redis-server") is None:
        pytest.fail(f"the chaos suite needs a real Redis: {REDIS_INSTALL_HINT}", pytrace=False)
    workdir: Path = tmp_path_factory.mktemp("chaos")
    lines: list[str] = []
    result = run(BOUNDED, workdir, echo=lines.append)
    TIMELINE.extend([*lines, summary(result), f"(logs and state in {workdir})"])
    yield result


def test_the_faults_really_happened(report: Report) -> None:
    tally = report.tally
    assert len(tally.kills) >= 3
    assert tally.pool_kills >= 1
    assert tally.redis_restarts == 1
    ((runs, _),) = tally.in_flight_at_restart
    assert runs > 0, "Redis restarted while workers held leases on rotations in flight"
    assert all(tally.vault_faults[kind] > 0 for kind in ("rate_limited", "service_unavailable"))
    assert tally.vault_faults["latency"] > 0
    assert tally.vault_faults["late_answer"] > 0, "writes answered after the read timeout"
    assert sum(tally.salesforce_faults.values()) > 0
    assert tally.due_events == BOUNDED.secrets
    assert len(report.facts.postgres) == BOUNDED.postgres
    assert len(report.facts.acl) == BOUNDED.acl
    assert len(report.facts.consumers) == BOUNDED.postgres + BOUNDED.acl
    assert tally.redeliveries > 0
    assert report.facts.manual and sum(tally.manual.values()) == len(report.facts.manual)


def test_manual_rotations_were_queued_or_refused_as_busy(report: Report) -> None:
    outcomes = set(report.tally.manual)
    assert outcomes <= {"CLI queued", "CLI refused: rotation active", "published"}, outcomes


def test_every_check_ran(report: Report) -> None:
    assert [check.name for check in report.checks] == list(CHECKS)
    assert all(check.covered > 0 for check in report.checks)


@pytest.mark.parametrize("name", CHECKS)
def test_invariant(report: Report, name: str) -> None:
    check = next(c for c in report.checks if c.name == name)
    assert check.ok, "\n".join([f"{name}:", *check.problems, "", *TIMELINE])
