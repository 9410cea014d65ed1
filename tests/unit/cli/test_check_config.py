"""``check-config``'s report: the ``next:`` line it ends with."""

from __future__ import annotations

from orchestrator.cli.check_config import Report


def test_an_all_clear_says_running_workers_reload_the_file_by_themselves() -> None:
    step = Report(passed=["settings: environment variables are valid"]).next_step()
    assert step.startswith("nothing to do: running workers reload this routing file")
    assert "SIGHUP" in step and "restart" not in step


def test_problems_and_warnings_come_first() -> None:
    assert Report(config_problems=["x"]).next_step().startswith("fix each PROBLEM")
    assert Report(warnings=["x"]).next_step().startswith("look at each WARNING")
