"""The secret scan finds what it looks for, also inside a real (base64) kombu message body."""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from orchestrator.state import keys
from tests.chaos.leak import decoded_bodies, redis_dump

pytestmark = pytest.mark.integration

SENTINEL = "s3ntinel-Value-0123456789"


def test_a_value_in_a_queued_task_body_is_found(redis_url: str) -> None:
    producer = Celery("leak-test", broker=redis_url, set_as_current=False)
    producer.conf.update(task_serializer="json", accept_content=["json"])
    try:
        producer.send_task("t", kwargs={"path": "p", "oops": SENTINEL}, queue=keys.TASK_QUEUE)
    finally:
        producer.close()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stored = client.lrange(keys.TASK_QUEUE, 0, -1)
    dump = redis_dump(client)
    client.close()

    assert len(stored) == 1
    assert SENTINEL in decoded_bodies(stored[0])
    assert SENTINEL in decoded_bodies(dump)
    assert decoded_bodies("no message here") == ""
