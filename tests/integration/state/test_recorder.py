"""The recorder against a real Redis: queued bookkeeping rides along with the next script."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from orchestrator.local.processes import RedisServer
from orchestrator.log import get_logger
from orchestrator.state import history
from orchestrator.state.recorder import Recorder, WriteQueue
from orchestrator.state.records import RunRecord

pytestmark = pytest.mark.integration

#: Returns the stream's length when it runs: proves what was written ahead of it.
STREAM_LEN = "return redis.call('XLEN', KEYS[1])"


class Counting(redis.Connection):
    """Counts round trips (a pipeline is one ``send_packed_command``)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=Counting)
    client = redis.Redis(connection_pool=pool)
    yield client
    client.close()


def xadd(event: str) -> Callable[[redis.client.Pipeline], None]:
    def write(pipe: redis.client.Pipeline) -> None:
        pipe.xadd("t:history", {"event": event})

    return write


def test_queued_writes_go_ahead_of_the_script_in_one_round_trip(client: redis.Redis) -> None:
    outbox = WriteQueue(client, get_logger("test"))
    script = client.register_script(STREAM_LEN)
    outbox.queue(xadd("a"), "history_write_failed")
    outbox.queue(xadd("b"), "history_write_failed")
    assert script(keys=["t:other"]) == 0  # loads it; the handshake is not ours to count
    Counting.sent = 0
    assert outbox.call(script, ["t:history"], []) == 2, "both entries were there before it ran"
    assert Counting.sent == 1
    assert outbox.call(script, ["t:history"], []) == 2, "nothing is sent twice"


def test_a_script_redis_forgot_is_loaded_again_and_writes_are_not_repeated(
    client: redis.Redis,
) -> None:
    outbox = WriteQueue(client, get_logger("test"))
    script = client.register_script(STREAM_LEN)
    assert script(keys=["t:history"]) == 0
    client.script_flush()  # what a Redis restart without the script cache looks like
    outbox.queue(xadd("a"), "history_write_failed")
    assert outbox.call(script, ["t:history"], []) == 1
    assert client.xlen("t:history") == 1


def test_a_failed_write_is_logged_and_the_script_still_runs(
    client: redis.Redis, log_stream: Any
) -> None:
    outbox = WriteQueue(client, get_logger("test"))
    client.set("t:not-a-hash", "x")

    def wrong_type(pipe: redis.client.Pipeline) -> None:
        pipe.hincrby("t:not-a-hash", "n", 1)

    outbox.queue(wrong_type, "metrics_write_failed", rotator="r")
    outbox.queue(xadd("a"), "history_write_failed")
    script = client.register_script(STREAM_LEN)
    assert outbox.call(script, ["t:history"], []) == 1
    logged = log_stream.getvalue()
    assert '"event": "metrics_write_failed"' in logged and "history_write_failed" not in logged


def test_a_script_error_is_raised_after_the_writes(client: redis.Redis) -> None:
    outbox = WriteQueue(client, get_logger("test"))
    broken = client.register_script("return redis.call('NOSUCHCOMMAND')")
    outbox.queue(xadd("a"), "history_write_failed")
    with pytest.raises(redis.ResponseError):
        outbox.call(broken, [], [])
    assert client.xlen("t:history") == 1


def test_each_thread_sends_only_its_own_writes(client: redis.Redis) -> None:
    outbox = WriteQueue(client, get_logger("test"))
    script = client.register_script(STREAM_LEN)
    outbox.queue(xadd("main"), "history_write_failed")
    seen: list[int] = []
    other = threading.Thread(target=lambda: seen.append(outbox.call(script, ["t:history"], [])))
    other.start()
    other.join()
    assert seen == [0], "a heartbeat thread's script must not carry this thread's writes"
    outbox.flush()
    assert client.xlen("t:history") == 1


def test_flush_with_redis_gone_logs_instead_of_raising(
    own_redis: RedisServer, log_stream: Any
) -> None:
    client = redis.Redis.from_url(own_redis.url, socket_connect_timeout=1)
    outbox = WriteQueue(client, get_logger("test"))
    outbox.queue(xadd("a"), "history_write_failed", path="a/b")
    own_redis.stop()
    outbox.flush()
    assert '"event": "history_write_failed"' in log_stream.getvalue()
    outbox.flush()  # nothing left to send


def test_a_write_that_fails_to_queue_is_logged_and_the_rest_still_go(
    client: redis.Redis, log_stream: Any
) -> None:
    outbox = WriteQueue(client, get_logger("test"))

    def broken(pipe: redis.client.Pipeline) -> None:
        raise ValueError("a bookkeeping bug")

    outbox.queue(broken, "metrics_write_failed", rotator="r")
    outbox.queue(xadd("a"), "history_write_failed")
    script = client.register_script(STREAM_LEN)
    assert outbox.call(script, ["t:history"], []) == 1
    assert '"event": "metrics_write_failed"' in log_stream.getvalue()


def test_a_history_entry_is_stamped_when_it_happened_not_when_sent(client: redis.Redis) -> None:
    recorder = Recorder(client, get_logger("test"), "test")
    recorder.history(RunRecord(rotation_id="r1", path="a/b", state="queued"), "rotation_started")
    queued_at = datetime.now(UTC)
    time.sleep(0.3)
    recorder.flush()
    [entry] = history.read(client, "a/b")
    stamped = datetime.fromisoformat(entry["ts"])
    assert abs((stamped - queued_at).total_seconds()) < 0.2
