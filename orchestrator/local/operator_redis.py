"""Whether the operator's Redis (``REDIS_URL``) may be lent to a local sandbox.

A sandbox uses the operator's Redis only when it answers and holds nothing of a deployment:
a sandbox's worker and beat on a deployment's Redis would take its tasks.
"""

from __future__ import annotations

import redis

from orchestrator import connection
from orchestrator.settings import Settings
from orchestrator.state import keys


def redis_reachable(url: str, master: str = connection.DEFAULT_MASTER) -> bool:
    """True when a Redis answers PING at ``url`` within a second."""
    try:
        client = connection.redis_client(
            url, master=master, socket_connect_timeout=1, socket_timeout=1
        )
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_in_use(url: str, master: str = connection.DEFAULT_MASTER) -> str | None:
    """Why the Redis at ``url`` must not be lent to a sandbox, or ``None`` if it may.

    A Redis holding our ``svr:*`` keys or the ``scaivault`` Celery queue belongs to a real
    deployment: a sandbox's worker and beat there would take its tasks, with the emulator
    standing in for ScaiVault.
    """
    client = connection.redis_client(url, master=master, socket_connect_timeout=1, socket_timeout=5)
    try:
        if client.exists(keys.TASK_QUEUE, f"_kombu.binding.{keys.TASK_QUEUE}"):
            return f"it holds the {keys.TASK_QUEUE!r} task queue"
        for _ in client.scan_iter(match=f"{keys.PREFIX}*", count=1000):
            return f"it holds {keys.PREFIX}* keys"
    finally:
        client.close()
    return None


def explicit_redis(settings: Settings) -> tuple[str | None, str | None]:
    """``(REDIS_URL, None)`` if the operator set it, it answers and it holds none of a
    deployment's keys; else ``(None, why not)`` (``why`` is ``None`` when it was not set)."""
    if "redis_url" not in settings.model_fields_set:
        return None, None
    url, master = settings.redis_url, settings.redis_sentinel_master
    if not redis_reachable(url, master):
        return None, "does not answer"
    try:
        busy = redis_in_use(url, master)
    except redis.RedisError as exc:
        return None, f"cannot be inspected ({type(exc).__name__})"
    if busy is not None:
        return None, f"is a deployment's Redis: {busy}"
    return url, None
