"""The state store's Lua files: each opens with a header naming its KEYS and ARGV, the prelude
runs ahead of exactly the scripts that use it, and its run-state tables are the records' sets."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from orchestrator.state import scripts
from orchestrator.state.records import LEASED, TERMINAL

LUA = resources.files("orchestrator.state").joinpath("lua")
NAMES = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))
SCRIPTS = [name for name in NAMES if name != "prelude"]
#: What the prelude defines for the scripts behind it.
PRELUDE_NAMES = ("now", "TERMINAL", "LEASED", "apply_fields")


def split(name: str) -> tuple[str, str]:
    """Script ``name``'s header (its leading comment lines) and the code after it."""
    lines = LUA.joinpath(f"{name}.lua").read_text("utf-8").splitlines()
    count = next((n for n, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "\n".join(lines[:count]), "\n".join(lines[count:])


def lua_set(table: str) -> set[str]:
    """The keys of the prelude's ``local <table> = {name = true, ...}``."""
    match = re.search(rf"^local {table} = \{{(.*?)\}}", split("prelude")[1], re.M | re.S)
    assert match, f"no table {table} in prelude.lua"
    entries = re.findall(r"(\w+)\s*=\s*(\w+)", match.group(1))
    assert all(value == "true" for _, value in entries)
    return {name for name, _ in entries}


def test_there_are_scripts() -> None:
    assert "prelude" in NAMES and len(SCRIPTS) >= 11


def test_the_prelude_tables_are_the_records_sets() -> None:
    assert lua_set("TERMINAL") == {str(s) for s in TERMINAL}
    assert lua_set("LEASED") == {str(s) for s in LEASED}


@pytest.mark.parametrize("name", NAMES)
def test_a_header_names_the_script_and_every_key_it_uses(name: str) -> None:
    header, code = split(name)
    assert header.startswith(f"-- {name}: ")
    used = set(re.findall(r"KEYS\[(\d+)\]", code))
    if used:
        assert set(re.findall(r"KEYS\[(\d+)\]", header)) == used
    else:
        assert "Touches no key" in header


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_header_names_every_argument_and_the_reply(name: str) -> None:
    header, code = split(name)
    named = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", header)}
    named_from = {int(n) for n in re.findall(r"ARGV\[(\d+)\.\.\]", header)}
    used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", code)}
    used_from = {
        int(n) for n in re.findall(r"(?:apply_fields\(KEYS\[\d+\], |unpack\(ARGV, )(\d+)\)", code)
    }
    assert used <= named | {n for n in used if any(n >= start for start in named_from)}
    assert used_from <= named_from
    assert "Returns" in header


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_prelude_runs_ahead_of_exactly_the_scripts_that_use_it(name: str) -> None:
    code = split(name)[1]
    uses = any(re.search(rf"\b{word}\b", code) for word in PRELUDE_NAMES)
    prelude = LUA.joinpath("prelude.lua").read_text("utf-8")
    assert scripts.source(name).startswith(prelude) == uses
    assert scripts.source(name).endswith(LUA.joinpath(f"{name}.lua").read_text("utf-8"))
