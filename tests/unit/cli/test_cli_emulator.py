"""The emulator command's admin token: an option, a file, or EMULATOR_ADMIN_TOKEN via settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from orchestrator.cli.main import cli
from orchestrator.settings import env_names

TOKEN = "adm-cli-token-3318"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


def parse(*args: str) -> dict[str, Any]:
    """The emulator command's parameters after parsing (nothing runs)."""
    command = cli.commands["emulator"]
    context = command.make_context("emulator", list(args), parent=click.Context(cli))
    return dict(context.params)


def test_the_option_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_ADMIN_TOKEN", "from-env")
    assert parse("--admin-token", TOKEN)["admin_token"] == TOKEN


def test_a_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    file = tmp_path / "admin-token"
    file.write_text(TOKEN + "\n", encoding="utf-8")
    assert parse("--admin-token-file", str(file))["admin_token"] == TOKEN


def test_the_variable_is_read_through_the_settings_even_with_placeholders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMULATOR_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("ROTATOR_SEAL_KEY", "change-me")  # invalid for the rotator, not for this
    assert parse("--port", "8200")["admin_token"] == TOKEN
    assert "EMULATOR_ADMIN_TOKEN" in env_names()


def test_no_token_anywhere_is_bad_usage() -> None:
    with pytest.raises(click.MissingParameter) as missing:
        parse("--port", "8200")
    message = missing.value.format_message()
    assert "--admin-token" in message and "EMULATOR_ADMIN_TOKEN" in message
    assert missing.value.exit_code == 2


def test_an_empty_file_or_both_sources_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(click.MissingParameter):
        parse("--admin-token-file", str(empty))
    file = tmp_path / "admin-token"
    file.write_text(TOKEN, encoding="utf-8")
    with pytest.raises(click.BadParameter, match="not both") as both:
        parse("--admin-token", "x", "--admin-token-file", str(file))
    assert TOKEN not in both.value.format_message()
    with pytest.raises(click.BadParameter):
        parse("--admin-token-file", str(tmp_path / "missing"))
