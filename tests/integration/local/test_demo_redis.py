"""Which Redis the demo uses: an operator's REDIS_URL only if no deployment uses it."""

from __future__ import annotations

import pytest
import redis

from orchestrator.local.demo import _operator_redis
from orchestrator.state import keys

pytestmark = pytest.mark.integration


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> list[str]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    return []


def test_an_unused_redis_is_borrowed(said: list[str], redis_url: str) -> None:
    assert _operator_redis(said.append) == redis_url
    assert said == []


@pytest.mark.parametrize(
    "fill",
    [
        lambda c: c.set(keys.run("r1"), "x"),
        lambda c: c.lpush(keys.TASK_QUEUE, "{}"),
        lambda c: c.sadd(f"_kombu.binding.{keys.TASK_QUEUE}", "x"),
    ],
    ids=["svr-keys", "queue", "queue-binding"],
)
def test_a_deployments_redis_is_never_used(
    said: list[str], redis_client: redis.Redis, fill: object
) -> None:
    fill(redis_client)  # type: ignore[operator]
    assert _operator_redis(said.append) is None, "the sandbox must start a private redis-server"
    assert len(said) == 1 and "a deployment's Redis" in said[0] and "private" in said[0]
