"""The ``scaivault-rotator`` command line: process roles and on-call commands.

Exit codes: 0 success, 1 a failed operation, 2 bad usage or configuration. ``--help`` lists
the commands by section (:data:`SECTIONS`); click's shell completion completes secret paths
(:mod:`orchestrator.cli.complete`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator import __version__

#: How ``--help`` groups the commands; a command not listed shows under "Other commands".
SECTIONS = (
    ("Process roles", ("serve", "worker", "beat", "health", "emulator")),
    (
        "On-call",
        ("status", "history", "rotate", "finalize", "retry", "cancel", "rollback", "acknowledge"),
    ),
    ("Setup and checks", ("check-config", "rotators", "demo", "dev")),
)


class SectionedGroup(click.Group):
    """A command group whose help lists its commands by section: the processes a deployment
    runs apart from the tools on-call uses."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = {
            name: command
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        }
        listed = {name for _, names in SECTIONS for name in names}
        sections = [*SECTIONS, ("Other commands", tuple(sorted(set(commands) - listed)))]
        limit = formatter.width - 6 - max(map(len, commands), default=0)
        for title, names in sections:
            rows = [(n, commands[n].get_short_help_str(limit)) for n in names if n in commands]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scaivault-rotator")
@click.option(
    "-v", "--verbose", count=True, help="On-call commands: show log lines on stderr (-vv: debug)."
)
def cli(verbose: int) -> None:
    """Rotate credentials stored in ScaiVault: receiver, workers, beat and on-call tools.

    Shell completion of commands, options and secret paths, in ~/.bashrc (zsh_source and
    fish_source for those shells):

    \b
      eval "$(_SCAIVAULT_ROTATOR_COMPLETE=bash_source scaivault-rotator)"
    """


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run the webhook receiver (POST /scaivault/events, /healthz, /readyz, /metrics)."""
    from orchestrator.receiver.app import serve as run

    run(host=host, port=port, workers=workers)


def _admin_token(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """``--admin-token``, else ``--admin-token-file``, else ``EMULATOR_ADMIN_TOKEN``."""
    file: str | None = ctx.params.get("admin_token_file")
    if value is not None and file is not None:
        raise click.BadParameter("give --admin-token or --admin-token-file, not both")
    if value is None and file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                value = handle.read().strip()
        except (OSError, UnicodeError) as exc:
            raise click.BadParameter(f"cannot read {file}: {type(exc).__name__}") from None
    if value is None:
        from orchestrator.settings import EmulatorSettings

        token = EmulatorSettings().emulator_admin_token
        value = token.get_secret_value() if token is not None else None
    if not value:
        raise click.MissingParameter(
            ctx=ctx, param=param, message="Or give --admin-token-file, or set EMULATOR_ADMIN_TOKEN."
        )
    return value


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8200, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--admin-token-file",
    type=click.Path(exists=True, dir_okay=False),
    is_eager=True,
    help="File holding the admin token (instead of --admin-token).",
)
@click.option(
    "--admin-token",
    callback=_admin_token,
    help="Admin token (default: --admin-token-file, else EMULATOR_ADMIN_TOKEN).",
)
@click.option("--state-file", type=click.Path(dir_okay=False), help="Keep state across restarts.")
def emulator(
    host: str, port: int, admin_token_file: str | None, admin_token: str, state_file: str | None
) -> None:
    """Run a local ScaiVault emulator (for plugin authors, tests and the demo)."""
    from orchestrator.local.emulator import serve as run

    run(host=host, port=port, admin_token=admin_token, state_file=state_file)


def _celery_app() -> Any:
    """Import the Celery app; a bad environment exits 2 with every problem listed."""
    from orchestrator.errors import ConfigError

    try:
        from orchestrator.worker import app as celery_app
    except ConfigError as exc:
        click.echo("scaivault-rotator: invalid configuration", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(2) from None
    return celery_app


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=int, help="Pool processes (default: CPU count).")
@click.option("--loglevel", "-l", help="Log level (default: ROTATOR_LOG_LEVEL).")
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
    help="Celery execution pool.",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    concurrency: int | None, loglevel: str | None, pool: str, celery_args: tuple[str, ...]
) -> None:
    """Run a Celery worker for the rotation tasks (refuses a bad routing file with exit 2).

    Arguments after -- go to 'celery worker' as they are:

    \b
      scaivault-rotator worker -- --without-mingle
    """
    module = _celery_app()
    from orchestrator.errors import ConfigError

    try:
        module.check_worker_config(module.settings)
    except ConfigError as exc:
        module.refuse(exc)
    argv = ["worker", "-Q", module.keys.TASK_QUEUE, "-P", pool]
    argv += ["--loglevel", loglevel or module.settings.rotator_log_level]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    _run_celery(argv + list(celery_args), quiet=module.settings.rotator_log_format == "json")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", "-l", help="Log level (default: ROTATOR_LOG_LEVEL).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str | None, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat: sweep every ROTATOR_SWEEP_INTERVAL, reconcile every ..._INTERVAL.

    Arguments after -- go to 'celery beat' as they are:

    \b
      scaivault-rotator beat -- --pidfile /run/scaivault-rotator/beat.pid
    """
    module = _celery_app()
    argv = ["beat", "--loglevel", loglevel or module.settings.rotator_log_level]
    _run_celery(argv + list(celery_args), quiet=module.settings.rotator_log_format == "json")


@cli.command()
@click.argument("role", type=click.Choice(["worker", "beat"]))
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a heartbeat counts as fresh (default: 6 x ROTATOR_HEARTBEAT_INTERVAL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health(role: str, max_age: float | None, as_json: bool) -> None:
    """Liveness probe: exit 0 if this host's ROLE process beat lately, else 1, with one line
    saying why.

    The worker beats from its consumer's event loop and beat from its scheduler tick, so a
    process whose work loop stopped fails even while it still runs. Use it as the exec probe of
    a container (Kubernetes, compose).
    """
    from orchestrator.errors import ConfigError
    from orchestrator.settings import Settings
    from orchestrator.worker.liveness import check

    try:
        settings = Settings.load()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    fresh = max_age or 6 * settings.rotator_heartbeat_interval
    verdict = check(settings.rotator_heartbeat_dir, role, fresh)
    if as_json:
        click.echo(json.dumps({"alive": verdict.alive, "reason": verdict.reason}))
    else:
        click.echo(("ok: " if verdict.alive else "FAILING: ") + verdict.reason)
    raise SystemExit(0 if verdict.alive else 1)


def _run_celery(argv: list[str], *, quiet: bool) -> None:
    """Run ``celery -A orchestrator.celery_app ARGV`` here and exit with Celery's exit status;
    ``quiet`` leaves out Celery's plain-text banner (JSON logs must be JSON only).

    Celery reports how its worker stopped as the command's exit code (0 after a warm shutdown,
    1 after an unrecoverable error, 73 when its pid file is taken, ...); ``app.worker_main``
    and ``app.start`` drop it, so a supervisor restarting on failure would see a success.
    """
    from celery.bin.celery import celery

    options = ["-A", "orchestrator.celery_app", *(["--quiet"] if quiet else [])]
    code = celery.main([*options, *argv], standalone_mode=False)
    raise SystemExit(code if isinstance(code, int) else 0)


# --- on-call commands and the demo (implemented in orchestrator.cli.commands) ---
from orchestrator.cli.commands import COMMANDS as _ONCALL_COMMANDS  # noqa: E402

for _command in _ONCALL_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point (``python -m orchestrator`` too: one program name, so
    usage lines and the completion variable are the same however it was started)."""
    cli(prog_name="scaivault-rotator")
