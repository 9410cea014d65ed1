"""Routing-file text (docs/operating.md#routing-file) from rule dicts, escaped so any value reads
back unchanged."""

from __future__ import annotations

from typing import Any


def toml_value(value: Any) -> str:
    """``value`` (str, bool, int, finite float, or a list or tuple of those) as a TOML value;
    strings are escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if not isinstance(value, str):
        raise TypeError(f"no TOML form for {type(value).__name__}")
    out = []
    for char in value:
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def routing_toml(rules: list[dict[str, Any]], comment: str = "") -> str:
    """A routing file (docs/operating.md#routing-file) for ``rules``: dicts of ``match``,
    ``rotator``, optional ``grace_period`` (and other rule keys) and an optional ``options``
    table (a dict in it becomes a sub-table, e.g. ``[rules.options.password]``). The one place tests
    and the sandbox build routing text, so a value with quotes or backslashes cannot break the
    file."""
    lines = [f"# {comment}"] if comment else []
    for rule in rules:
        lines.append("[[rules]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in rule.items() if k != "options"]
        if rule.get("options"):
            lines += _table("rules.options", rule["options"])
        lines.append("")
    return "\n".join(lines)


def _table(name: str, values: dict[str, Any]) -> list[str]:
    """``[name]`` with ``values``; a dict value becomes a sub-table ``[name.key]`` after it."""
    lines = [f"[{name}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for key, value in values.items():
        if isinstance(value, dict):
            lines += _table(f"{name}.{key}", value)
    return lines
