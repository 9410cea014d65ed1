"""The plugin contract's notes: names and values a rotator may keep, and the default store."""

from __future__ import annotations

from typing import Any

import pytest

from rotators import MemoryNotes, NoOptions, RotationContext, SecretData, SecretVersion
from rotators.testing import CapturingLog, MemoryVault


def test_memory_notes_keep_what_was_put() -> None:
    notes = MemoryNotes()
    assert notes.get("staged_id") is None
    notes.put("staged_id", "0Sc1")
    notes.put("staged_id", "0Sc2")
    notes.put("n" * 40, "x" * 256)
    assert notes.get("staged_id") == "0Sc2"
    assert notes.as_dict() == {"staged_id": "0Sc2", "n" * 40: "x" * 256}


@pytest.mark.parametrize(
    ("name", "value"),
    [("", "v"), ("Staged", "v"), ("staged-id", "v"), ("n" * 41, "v"), ("a", ""), ("a", "x" * 257),
     ("a", 1)],
)  # fmt: skip
def test_invalid_notes_are_refused(name: str, value: Any) -> None:
    notes = MemoryNotes()
    with pytest.raises(ValueError, match="note"):
        notes.put(name, value)
    assert notes.as_dict() == {}


def test_a_context_built_by_hand_has_notes_of_its_own() -> None:
    def context() -> RotationContext:
        current = SecretVersion(path="p", version=1, data=SecretData({"k": "v"}))
        return RotationContext("p", "rot_1", current, NoOptions(), CapturingLog(), MemoryVault())

    first, second = context(), context()
    first.notes.put("seen", "1")
    assert first.notes.get("seen") == "1" and second.notes.get("seen") is None
