import pytest
import redis

from orchestrator.state import history, keys

pytestmark = pytest.mark.integration


def test_append_and_read_newest_last(redis_client: redis.Redis) -> None:
    for n in range(5):
        history.append(redis_client, "a/b", "step_done", step="mint", attempt=n)
    rows = history.read(redis_client, "a/b", limit=3)
    assert [r["attempt"] for r in rows] == ["2", "3", "4"]
    assert rows[-1]["event"] == "step_done"
    assert rows[-1]["ts"].endswith("+00:00")


def test_unknown_fields_are_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="client_secret"):
        history.append(redis_client, "a/b", "oops", client_secret="x")


def test_an_engine_entry_keeps_a_stream_that_only_events_had_written(
    redis_client: redis.Redis,
) -> None:
    key = keys.history("a/b")
    redis_client.xadd(key, {"event": "secret.updated"})
    redis_client.expire(key, 60)  # as event_record.lua leaves a stream of events only
    history.append(redis_client, "a/b", "rotation_started")
    assert redis_client.ttl(key) == -1
    assert [r["event"] for r in history.read(redis_client, "a/b")] == [
        "secret.updated",
        "rotation_started",
    ]
