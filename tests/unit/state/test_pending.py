"""The pending events' scripts on the real private Redis (fakeredis does not run Lua reliably)."""

from __future__ import annotations

import asyncio
import json
import time

import redis
import redis.asyncio

from orchestrator.receiver.publish import Claim, Publisher
from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest, message_kwargs
from orchestrator.state.pending import PendingEvents

REQUEST = RotateRequest(
    path="apps/ledger/db", event_id="evt_l1", from_version=4, grace_period="1h", actor="scaivault"
)
KWARGS = REQUEST.to_kwargs()


def accept(redis_url: str, event_id: str = "evt_l1") -> Claim:
    """What the receiver does for one rotation.due: the claim script through a Publisher."""

    async def go() -> Claim:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            publisher = Publisher(client, claim_ttl=3600, timeout=5.0)
            request = RotateRequest.from_kwargs({**KWARGS, "event_id": event_id})
            return await publisher.publish_task(event_id, request)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_claim_records_the_event_with_the_exact_message(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = int(time.time() * 1000)
    claim = accept(redis_url)
    assert claim.fresh
    queued = redis_client.lrange(keys.TASK_QUEUE, 0, -1)
    assert queued == [redis_client.hget(keys.PENDING_MESSAGES, "evt_l1")]
    score = redis_client.zscore(keys.PENDING, "evt_l1")
    assert score is not None and score >= before
    assert message_kwargs(queued[0]) == KWARGS


def test_a_duplicate_adds_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    accept(redis_url)
    PendingEvents(redis_client).settle("evt_l1")
    assert not accept(redis_url).fresh
    assert redis_client.llen(keys.TASK_QUEUE) == 1
    assert redis_client.zcard(keys.PENDING) == 0 and not redis_client.exists(keys.PENDING_MESSAGES)


def test_settle_removes_every_trace(redis_url: str, redis_client: redis.Redis) -> None:
    accept(redis_url)
    ledger = PendingEvents(redis_client)
    redis_client.lpop(keys.TASK_QUEUE)
    ledger.republish(0.0, max_publishes=3)
    ledger.settle("evt_l1")
    for key in (keys.PENDING, keys.PENDING_MESSAGES, keys.PENDING_PUBLISHES):
        assert not redis_client.exists(key), key
    assert ledger.entries() == []


def test_a_queued_message_is_not_published_again(redis_url: str, redis_client: redis.Redis) -> None:
    accept(redis_url)
    first = redis_client.zscore(keys.PENDING, "evt_l1")
    time.sleep(0.01)  # so a bumped score differs
    swept = PendingEvents(redis_client).republish(0.0, max_publishes=3)
    assert swept.published == [] and swept.exhausted == []
    assert redis_client.llen(keys.TASK_QUEUE) == 1
    assert redis_client.zscore(keys.PENDING, "evt_l1") > first  # waits one more threshold
    assert not redis_client.hexists(keys.PENDING_PUBLISHES, "evt_l1")


def test_a_message_a_worker_holds_unacked_is_not_published_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    message = redis_client.rpop(keys.TASK_QUEUE)  # what kombu's BRPOP does ...
    tag = json.loads(message)["properties"]["delivery_tag"]
    redis_client.hset(keys.BROKER_UNACKED, tag, message)  # ... and its bookkeeping after it
    swept = PendingEvents(redis_client).republish(0.0, max_publishes=3)
    assert swept.published == [] and redis_client.llen(keys.TASK_QUEUE) == 0


def test_a_lost_message_is_published_again_with_fresh_ids(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    lost = json.loads(redis_client.rpop(keys.TASK_QUEUE))  # taken, then the worker was killed
    swept = PendingEvents(redis_client).republish(0.0, max_publishes=3)
    assert swept.published == ["evt_l1"]
    again = redis_client.lrange(keys.TASK_QUEUE, 0, -1)
    assert len(again) == 1 and message_kwargs(again[0]) == KWARGS
    fresh = json.loads(again[0])
    assert fresh["headers"]["id"] != lost["headers"]["id"]
    assert fresh["properties"]["delivery_tag"] != lost["properties"]["delivery_tag"]
    assert redis_client.hget(keys.PENDING_MESSAGES, "evt_l1") == again[0]
    assert redis_client.hget(keys.PENDING_PUBLISHES, "evt_l1") == "1"
    # the new message is queued: the next sweep leaves it alone
    assert PendingEvents(redis_client).republish(0.0, max_publishes=3).published == []


def test_entries_younger_than_the_threshold_are_left_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    redis_client.rpop(keys.TASK_QUEUE)
    swept = PendingEvents(redis_client).republish(60.0, max_publishes=3)
    assert swept.published == [] and redis_client.llen(keys.TASK_QUEUE) == 0


def test_out_of_publishes_is_exhausted_only_when_lost(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    ledger = PendingEvents(redis_client)
    redis_client.rpop(keys.TASK_QUEUE)
    assert ledger.republish(0.0, max_publishes=1).published == ["evt_l1"]
    still_queued = ledger.republish(0.0, max_publishes=1)
    assert still_queued.exhausted == [] and redis_client.llen(keys.TASK_QUEUE) == 1
    redis_client.rpop(keys.TASK_QUEUE)
    swept = ledger.republish(0.0, max_publishes=1)
    assert swept.published == [] and [e.event_id for e in swept.exhausted] == ["evt_l1"]
    assert swept.exhausted[0].kwargs == KWARGS and swept.exhausted[0].publishes == 1
    assert redis_client.llen(keys.TASK_QUEUE) == 0


def test_a_sweep_that_read_an_old_score_does_not_publish_twice(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    ledger = PendingEvents(redis_client)
    redis_client.rpop(keys.TASK_QUEUE)
    stale = ledger.entries()
    time.sleep(0.01)  # so the re-publish's score differs from the one read
    assert ledger.republish(0.0, max_publishes=3).published == ["evt_l1"]
    redis_client.rpop(keys.TASK_QUEUE)
    ledger.entries = lambda *a, **k: stale  # type: ignore[method-assign]  # a slower sweeper
    assert ledger.republish(0.0, max_publishes=3).published == []
    assert redis_client.llen(keys.TASK_QUEUE) == 0


def test_touch_delays_the_sweep_and_never_revives_a_settled_entry(
    redis_url: str, redis_client: redis.Redis
) -> None:
    accept(redis_url)
    ledger = PendingEvents(redis_client)
    redis_client.rpop(keys.TASK_QUEUE)  # acked by a task that retries with a new message
    accepted = redis_client.zscore(keys.PENDING, "evt_l1")
    time.sleep(0.01)  # so the touched score differs
    ledger.touch("evt_l1")
    touched = redis_client.zscore(keys.PENDING, "evt_l1")
    assert accepted is not None and touched is not None and touched > accepted
    ledger.settle("evt_l1")
    ledger.touch("evt_l1")
    assert redis_client.zcard(keys.PENDING) == 0
