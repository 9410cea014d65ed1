"""The on-call output: rendering, and the one exception -> message/hint/exit-code map."""

from __future__ import annotations

import json

import click
import pytest
import redis
from click.testing import CliRunner

from orchestrator.cli.output import (
    EXIT_FAILED,
    EXIT_USAGE,
    describe_error,
    guarded,
    render_history,
    render_record,
    render_step,
    render_table,
    safe_url,
)
from orchestrator.errors import (
    AccessDenied,
    CommandError,
    ConfigError,
    NotFound,
    ServiceUnavailable,
)

SENTINEL = "s3ntinel-value-never-printed"


def test_command_error_keeps_its_hint_and_code() -> None:
    failure = describe_error(CommandError("no rule", hint="add one", exit_code=EXIT_USAGE))
    assert (failure.message, failure.hint, failure.exit_code) == ("no rule", "add one", 2)


def test_config_error_is_bad_usage_and_lists_every_problem() -> None:
    failure = describe_error(ConfigError("bad", ["REDIS_URL: wrong", "SCAIVAULT_URL: wrong"]))
    assert failure.exit_code == EXIT_USAGE
    assert "REDIS_URL: wrong" in failure.message and "SCAIVAULT_URL: wrong" in failure.message
    assert "check-config" in (failure.hint or "")


@pytest.mark.parametrize(
    ("exc", "hint_word"),
    [
        (NotFound("no secret at a/b", code="not_found", status=404), "spelling"),
        (AccessDenied("denied read on a/b", code="access_denied", status=403), "policy"),
        (ServiceUnavailable("unreachable", code="service_unavailable"), "SCAIVAULT_URL"),
    ],
)
def test_vault_errors_fail_the_operation_with_a_next_step(exc: Exception, hint_word: str) -> None:
    failure = describe_error(exc)
    assert failure.exit_code == EXIT_FAILED
    assert failure.message.startswith("ScaiVault: ")
    assert hint_word in (failure.hint or "")


def test_redis_errors_say_where_to_look() -> None:
    failure = describe_error(redis.ConnectionError("Error 111 connecting"))
    assert failure.exit_code == EXIT_FAILED and "REDIS_URL" in (failure.hint or "")


def test_foreign_exception_text_is_never_shown() -> None:
    failure = describe_error(RuntimeError(f"response body had {SENTINEL}"))
    assert SENTINEL not in failure.message and "RuntimeError" in failure.message


def _command(exc: Exception, as_json: bool) -> click.Command:
    @click.command()
    def cmd() -> None:
        with guarded(as_json):
            raise exc

    return cmd


def test_guarded_prints_plain_words_and_exits_with_the_code() -> None:
    result = CliRunner().invoke(_command(CommandError("it broke", hint="do X"), False))
    assert result.exit_code == 1
    assert "error: it broke" in result.output and "next: do X" in result.output
    assert "Traceback" not in result.output


def test_guarded_prints_json_for_scripts() -> None:
    result = CliRunner().invoke(_command(ConfigError("bad", ["A: b"]), True))
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["exit_code"] == 2


def test_safe_url_hides_the_password() -> None:
    assert safe_url("redis://:pw@host:6379/0") == "redis://***@host:6379/0"
    assert safe_url("redis://host:6379/0") == "redis://host:6379/0"


def test_record_and_table_rendering() -> None:
    record = {"path": "a/b", "state": "grace", "rotation_id": "r1", "last_error": None}
    text = render_record(record)
    assert text.splitlines()[0].startswith("path") and "grace" in text and "-" in text
    table = render_table([record], ("path", "state", "last_error"))
    assert table.splitlines()[0].split() == ["PATH", "STATE", "LAST_ERROR"]
    assert table.splitlines()[1].split() == ["a/b", "grace", "-"]


def test_history_and_step_lines() -> None:
    line = render_history([{"ts": "t0", "event": "rotation_stored", "new_version": "2"}])
    assert line.startswith("t0") and "new_version=2" in line
    step = render_step({"path": "a/b", "state": "verifying", "step": "verify", "attempts": 2})
    assert step == "a/b: verifying step=verify attempt=2"
