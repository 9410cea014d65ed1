"""Shared fixtures and test-wide settings. Each area keeps its fixtures in tests/fixtures/."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fixture modules import one another; registering the package first keeps pytest's assertion
# rewriting for all of them, whichever is imported first.
pytest.register_assert_rewrite("tests.fixtures")

pytest_plugins = [
    f"tests.fixtures.{module.stem}"
    for module in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if module.stem != "__init__"
]

# Hypothesis' timing checks (a 200 ms deadline per example, "data generation too slow") fail on
# a loaded machine without finding a bug; speed is measured by tests/benchmarks, not asserted.
_TIMING_FREE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("dev", **_TIMING_FREE)
settings.register_profile("ci", **_TIMING_FREE, print_blob=True)
_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _CI else "dev"))
