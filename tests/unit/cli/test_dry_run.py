"""The dry run's pieces that need no stack: where the target listens, and the plan for people."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.cli.dry_run import FAILED, OK, PathPlan, Probe, _address, _reach_probe, render


def test_the_address_comes_from_the_options_else_a_host_port_target() -> None:
    assert _address(SimpleNamespace(host="db.internal", port=5432), None) == ("db.internal", 5432)
    assert _address(object(), "db.internal:5432 (at most 16 at once)") == ("db.internal", 5432)
    assert _address(object(), "rule:apps/* (no limit)") is None
    assert _address(object(), "https://acme.my.salesforce.com (no limit)") is None


def test_no_address_is_not_a_failure() -> None:
    assert _reach_probe(None).result == "n/a"


def test_the_plan_names_why_a_path_would_fail() -> None:
    good = PathPlan("apps/a", rule="rule 1 ('apps/*')", rotator="x", current_version=3,
                    probes=[Probe("rotator preflight", OK, "passed")])  # fmt: skip
    bad = PathPlan("apps/b", probes=[Probe("admin secret readable", FAILED, "apps/admin: denied")],
                   problems=["admin secret readable: apps/admin: denied"])  # fmt: skip
    text = render([good, bad])
    assert "apps/a: ready" in text and "apps/b: WOULD FAIL" in text
    assert "problem: admin secret readable: apps/admin: denied" in text
    assert text.endswith("dry run: 1 of 2 ready; nothing was changed")
    assert bad.as_dict()["would_fail"] and not good.as_dict()["would_fail"]
