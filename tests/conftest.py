"""Shared fixtures. Each area keeps its fixtures in its own module under tests/fixtures/."""

from pathlib import Path

pytest_plugins = [
    f"tests.fixtures.{module.stem}"
    for module in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if module.stem != "__init__"
]
