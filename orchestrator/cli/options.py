"""What every on-call command shares: the common options, the session, who acts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestrator.duration import parse_duration

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
actor_option = click.option("--actor", help="Who does this (default: your login name).")
reason_option = click.option("--reason", help="Why, recorded in the path's history.")


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def session() -> OnCall:
    from orchestrator.cli.session import OnCall
    from orchestrator.log import configure_logging
    from orchestrator.settings import Settings

    settings = Settings.load()
    # Rotator and client logs go to stderr for people, warnings and worse only: stdout is
    # the answer (plain or --json).
    configure_logging(level="WARNING", fmt="console")
    return OnCall(settings)


def who(actor: str | None) -> str:
    from orchestrator.cli.session import login_user

    return actor or login_user()
