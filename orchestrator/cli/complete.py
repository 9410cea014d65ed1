"""Shell completion of secret paths: the paths this deployment has rotated, read from Redis.

Click runs completion in a fresh process on every <Tab>, so this stays cheap and quiet: one
bounded ``SCAN`` of the last-run keys under what was typed, short socket timeouts, and no
completion at all (never an error) when the settings or Redis are not there.
"""

from __future__ import annotations

import itertools

import click
from click.shell_completion import CompletionItem

#: At most this many paths are offered for one <Tab>.
LIMIT = 200


def secret_paths(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """PATH completion: rotated paths that start with ``incomplete``."""
    import redis

    from orchestrator import connection
    from orchestrator.errors import ConfigError
    from orchestrator.settings import Settings
    from orchestrator.state import keys

    try:
        settings = Settings.load()
        client = connection.redis_client(
            settings.redis_url,
            master=settings.redis_sentinel_master,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            decode_responses=True,
        )
        pattern = keys.last(_glob_escape(incomplete)) + "*"
        found = itertools.islice(client.scan_iter(match=pattern, count=1000), LIMIT)
        paths = sorted(key.removeprefix(keys.last("")) for key in found)
    except (ConfigError, redis.RedisError, OSError):
        return []
    return [CompletionItem(path) for path in paths]


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, so it matches itself."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
