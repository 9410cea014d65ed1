"""A local ScaiVault emulator: a real HTTP server behaving like ScaiVault for the spec's API.

Plugin authors, our tests, the demo and the chaos suite run it with
``scaivault-rotator emulator --port P --admin-token T [--state-file F]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.local.emulator.app import create_app

__all__ = ["create_app", "serve"]


def serve(host: str, port: int, admin_token: str, state_file: str | None = None) -> None:
    """Run the emulator on ``host:port`` until SIGINT/SIGTERM (state saved on the way out)."""
    import uvicorn

    from orchestrator.errors import ConfigError
    from orchestrator.log import configure_logging
    from orchestrator.settings import Settings

    try:
        settings = Settings.load()
        configure_logging(settings.rotator_log_level, settings.rotator_log_format)
    except ConfigError:
        configure_logging()
    try:
        app = create_app(admin_token, Path(state_file) if state_file else None)
    except ConfigError as exc:
        print(f"scaivault-rotator emulator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
