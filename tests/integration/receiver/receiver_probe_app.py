"""A tiny Celery app for receiver tests: proves a real worker consumes the receiver's messages.

Run as ``celery -A tests.integration.receiver.receiver_probe_app worker -Q scaivault``. Its
``scaivault.rotate`` task stores the keyword arguments it received under ``probe:rotate:<event>``
(the broker URL comes from ``REDIS_URL`` through the settings module, like the real app).
"""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery

from orchestrator.settings import Settings
from orchestrator.state.keys import TASK_QUEUE

settings = Settings.load()
app = Celery("receiver_probe", broker=settings.redis_url)
app.conf.update(
    task_default_queue=TASK_QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


def probe_key(event_id: str) -> str:
    """Where the probe task writes what it received for ``event_id``."""
    return f"probe:rotate:{event_id}"


@app.task(name="scaivault.rotate")
def rotate(**kwargs: Any) -> None:
    """Record the keyword arguments (and that only keyword arguments arrived)."""
    client = redis.Redis.from_url(settings.redis_url)
    client.set(probe_key(str(kwargs.get("event_id"))), json.dumps(kwargs))
    client.close()
