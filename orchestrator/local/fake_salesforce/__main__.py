"""The fake Salesforce's command line: ``python -m orchestrator.local.fake_salesforce --port P``."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.local.fake_salesforce.server import serve


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Serve HTTPS; the CA (ca.pem) and server certificate are created here on first use.",
)
@click.option(
    "--propagation-delay",
    default=0.0,
    show_default=True,
    type=float,
    help="Seconds before a newly staged credential is accepted by the token endpoint.",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep apps and credentials across restarts in this JSON file.",
)
def main(
    host: str, port: int, tls_dir: Path | None, propagation_delay: float, state_file: Path | None
) -> None:
    """Run a fake Salesforce org (OAuth token, limits, query, apps/oauth staged credentials)."""
    serve(host, port, tls_dir, propagation_delay, state_file)


if __name__ == "__main__":
    main()
