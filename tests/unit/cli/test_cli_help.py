"""The CLI's help reads well: commands grouped by who runs them, plain text (no reStructuredText
markup from docstrings), and a help text for every option."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import SECTIONS, cli

COMMANDS = sorted(cli.commands)
#: Any backtick: reStructuredText's ``literal``, Markdown's `code` and Sphinx's :func:`roles`.
MARKUP = re.compile(r"`+|:(?:func|class|mod|meth|data|attr):`")


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_top_level_help_lists_process_roles_apart_from_on_call_commands() -> None:
    text = _help()
    positions = {title: text.index(f"{title}:") for title, _ in SECTIONS}
    assert list(positions.values()) == sorted(positions.values())
    for (title, names), end in zip(
        SECTIONS, [*list(positions.values())[1:], len(text)], strict=True
    ):
        section = text[positions[title] : end]
        assert [n for n in names if re.search(rf"^  {re.escape(n)}\s", section, re.M)] == list(
            names
        )
    assert "Other commands" not in text, "every command belongs to a section"
    assert {n for _, names in SECTIONS for n in names} == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_is_plain_text_without_docstring_markup(name: str) -> None:
    assert MARKUP.findall(_help(name)) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_says_what_it_does(name: str) -> None:
    undocumented = [
        param.opts[0]
        for param in cli.commands[name].params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert undocumented == []


def test_the_markup_check_finds_markup() -> None:
    assert MARKUP.findall("Arguments after ``--`` go to :func:`celery`")
    assert MARKUP.findall("the path `status` listed")
