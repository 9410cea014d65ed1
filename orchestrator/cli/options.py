"""What every on-call command shares: the common options, the session, who acts."""

from __future__ import annotations

import logging
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


def session(*, naming: bool = False) -> OnCall:
    """The command's connections; ``naming``: a read command, whose error names the Redis
    and ScaiVault it asked (as its answer does)."""
    from orchestrator.cli.output import name_on_error
    from orchestrator.cli.session import OnCall
    from orchestrator.settings import Settings

    settings = Settings.load()
    quiet_logs()
    oc = OnCall(settings)
    if naming:
        name_on_error(oc.asked)
    return oc


def quiet_logs() -> None:
    """The answer goes to stdout (plain or --json), errors and hints to stderr; log lines only
    with -v (-vv: debug), never mixed into a command's output otherwise."""
    from orchestrator.log import configure_logging

    verbose = verbosity()
    configure_logging(level="DEBUG" if verbose > 1 else "INFO", fmt="console")
    if not verbose:
        logging.getLogger().setLevel(logging.CRITICAL + 1)


def verbosity() -> int:
    """How many ``-v`` the command line was given (on ``scaivault-rotator`` itself)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return 0
    return int(context.find_root().params.get("verbose") or 0)


def who(actor: str | None) -> str:
    from orchestrator.cli.session import login_user

    return actor or login_user()
