"""The product's Celery app plus one ``bench.noop`` task, for baselines on the same workers.

``celery -A tests.benchmarks.noop_app worker`` runs the real ``scaivault.*`` tasks and the
no-op side by side. ``bench.noop`` does one Redis ``INCR`` so the benchmark can tell when all
ran; it ignores its keyword arguments (sized like ``scaivault.rotate``'s).
"""

from __future__ import annotations

from typing import Any

import redis

import orchestrator.worker.tasks  # noqa: F401  (registers the product's tasks on the app)
from orchestrator.worker.app import app, settings

#: The counter ``bench.noop`` increments.
DONE_KEY = "bench:noop:done"
_client: redis.Redis | None = None


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(**_: Any) -> None:
    """Count one run; nothing else."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url)
    _client.incr(DONE_KEY)
