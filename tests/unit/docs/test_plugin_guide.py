"""The plugin guide's SDK reference and kit tables say what the SDK is: every export of
``rotators`` and ``rotators.testing`` is in the reference, every ``Rotator.x`` and field it
names exists (and every public one is named), and the checks table is ``Conformance.CHECKS``
in order. tests/integration/docs/test_recipes.py runs the guide's ``python`` blocks."""

from __future__ import annotations

import dataclasses
import re

import rotators
import rotators.testing
from rotators import PasswordPolicy, RotationContext, Rotator, SecretVersion
from rotators.testing import Conformance, Scenario
from tests.fixtures.docs import REPO, guide

GUIDE = guide(REPO / "docs" / "writing-rotators.md")
REFERENCE = GUIDE.text.split("\n## SDK reference\n", 1)[1].split("\n## ", 1)[0]
KIT_SOURCE = "\n".join(p.read_text("utf-8") for p in (REPO / "rotators" / "testing").glob("*.py"))


def subsection(title: str) -> str:
    return REFERENCE.split(f"\n### {title}\n", 1)[1].split("\n### ", 1)[0]


def table(first_header: str) -> list[list[str]]:
    (rows,) = [rows for header, rows in GUIDE.tables() if header and header[0] == first_header]
    return rows


def test_every_export_is_in_the_reference() -> None:
    exported = [*rotators.__all__, *rotators.testing.__all__]
    missing = [name for name in exported if not re.search(rf"`{name}\b", REFERENCE)]
    assert missing == []


def test_every_rotator_attribute_named_exists_and_every_public_one_is_named() -> None:
    named = set(re.findall(r"`Rotator\.(\w+)", subsection("`Rotator`")))
    declared = set(Rotator.__annotations__) | {n for n in vars(Rotator) if not n.startswith("_")}
    assert named - declared == set(), "named but not on Rotator"
    assert declared - named == set(), "on Rotator but not in the reference"


def test_every_field_of_the_data_types_is_named() -> None:
    for kind, title in [
        (RotationContext, "`RotationContext`"),
        (SecretVersion, "`SecretVersion`, `SecretData`, `Secret`"),
        (Scenario, "The kit"),
    ]:
        text = subsection(title)
        missing = [f.name for f in dataclasses.fields(kind) if f"`{f.name}" not in text]
        assert missing == [], kind.__name__


def test_every_field_of_the_password_policy_is_named() -> None:
    text = subsection("Passwords: `PasswordPolicy`, `generate`, `policy_problem`")
    missing = [name for name in PasswordPolicy.model_fields if f"`{name}`" not in text]
    assert missing == []


def test_the_checks_table_is_conformance_checks_in_order() -> None:
    names = [row[0].strip("`") for row in table("check")]
    assert tuple(names) == Conformance.CHECKS


def test_every_adapter_method_named_is_one_the_kit_calls() -> None:
    for row in table("adapter method"):
        name = row[0].strip("`").split("(", 1)[0]
        assert f'"{name}"' in KIT_SOURCE, f"the kit never looks for Target.{name}"


def test_the_guide_says_which_blocks_run() -> None:
    """``python`` blocks are recipes (run as written); ``py`` blocks are fragments."""
    text = GUIDE.text
    assert text.count("```python\n") >= 3 and "```py\n" in text
