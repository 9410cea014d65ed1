"""Shared fixtures; each area's fixtures live in its own module under tests/fixtures/."""

pytest_plugins = ["tests.fixtures.redis", "tests.fixtures.logs"]
