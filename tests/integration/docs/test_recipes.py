"""The plugin guide's recipes run as written: every ``python`` block of
docs/writing-rotators.md, in order and in one namespace (a later block uses what an earlier one
defined), then every ``test_*`` function they define, as pytest would. ``py`` blocks are
fragments of the prose and are not run. The kit recipe runs against the example issuer's fake
key service (a real HTTP server on 127.0.0.1), so this lives with the integration tests."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures.docs import REPO

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "writing-rotators.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def recipes() -> list[str]:
    return BLOCK.findall(GUIDE.read_text(encoding="utf-8"))


def test_the_plugin_guide_recipes_run_as_written() -> None:
    blocks = recipes()
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {"__name__": "writing_rotators_recipes"}
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"{GUIDE.name} python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the guide's own code, run as a reader would
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, "the kit recipe defines a test"
    for test in tests:
        test()
