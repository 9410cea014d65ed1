"""The kombu workaround in :mod:`orchestrator.worker.broker`, in-process against a Redis that stops.

Each test brings a kombu connection into the state a worker's consumer is in when Redis goes
away (one message delivered and not yet acknowledged, the next ``BRPOP`` sent, a second
channel on a fanout queue as Celery's remote control and gossip have), stops Redis, then does
what Celery's consumer does on a connection loss: collect the connection, then close it,
ignoring connection errors. kombu's own transport fails there with the ``AttributeError`` the
workaround exists for; the workaround's transport closes, and the message stays in Redis.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.common import ignore_errors
from kombu.message import Message
from kombu.transport import redis as kombu_redis
from kombu.transport import resolve_transport

from orchestrator.local.processes import RedisServer
from orchestrator.worker import broker

WORK = Queue("work", Exchange(""), routing_key="work")
CONTROL = Queue("control", Exchange("control", type="fanout"), auto_delete=True)
#: kombu's hash of delivered, unacknowledged messages (restored after the visibility timeout).
UNACKED = "unacked"


class Worker:
    """A kombu connection holding one unacknowledged message, waiting for the next."""

    def __init__(self, url: str, transport: type[Any]) -> None:
        self.connection = Connection(url, transport=transport)
        self.errors = self.connection.connection_errors
        self.delivered: list[Message] = []
        with Producer(self.connection.channel()) as producer:
            producer.publish({"task": 1}, routing_key="work", declare=[WORK])
        Consumer(
            self.connection.default_channel, [WORK], on_message=self.delivered.append
        ).consume()
        Consumer(self.connection.channel(), [CONTROL], no_ack=True, callbacks=[]).consume()
        deadline = time.monotonic() + 30
        while not self.delivered and time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                self.connection.drain_events(timeout=1)
        assert len(self.delivered) == 1, "the message was delivered"
        # The consumer's event loop has already asked for the next message (0: no time-out,
        # so Redis never answers and the reply is still outstanding when Redis goes away).
        self.connection.default_channel._brpop_start(timeout=0)

    def lose_connection(self) -> None:
        """What Celery's consumer does on a connection error: collect, then close."""
        with contextlib.suppress(Exception):
            self.connection.collect(socket_timeout=1.0)
        ignore_errors(self.connection, self.connection.close)


@pytest.fixture
def server(own_redis: RedisServer) -> Iterator[RedisServer]:
    yield own_redis


def _in_redis(url: str) -> int:
    """How many copies of the message Redis holds: on the queue or in kombu's unacked hash."""
    with redis.Redis.from_url(url) as client:
        return int(client.llen("work")) + int(client.hlen(UNACKED))


def test_kombu_alone_dies_when_redis_goes_away_with_a_message_unacknowledged(
    server: RedisServer,
) -> None:
    worker = Worker(server.url, kombu_redis.Transport)
    server.stop()
    with pytest.raises(AttributeError, match="hostname"):
        worker.lose_connection()  # passing means kombu fixed it: orchestrator.worker.broker can go


def test_the_workaround_closes_and_the_message_stays_in_redis(server: RedisServer) -> None:
    worker = Worker(server.url, broker.Transport)
    server.stop()
    worker.lose_connection()
    server.start()
    assert _in_redis(server.url) == 1, "the message waits in Redis to be restored"


def test_a_late_ack_on_a_lost_connection_is_a_connection_error(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(server.url, broker.Transport)
    server.stop()
    worker.lose_connection()
    (message,) = worker.delivered
    with pytest.raises(worker.errors):
        message.ack()  # a task that finished while the connection was being lost
    message.ack_log_error(logging.getLogger("test"), worker.errors)  # what Celery calls: no raise
    assert "Couldn't ack" in caplog.text


def test_a_channel_whose_connection_is_gone_raises_a_connection_error_for_a_new_pool(
    server: RedisServer,
) -> None:
    worker = Worker(server.url, broker.Transport)
    server.stop()
    worker.lose_connection()
    channel = worker.delivered[0].channel
    with pytest.raises(redis.exceptions.ConnectionError, match=broker.DETACHED):
        channel._connparams()  # kombu's own reads connection.client.hostname: AttributeError


def test_install_puts_the_workaround_under_kombus_redis_names() -> None:
    broker.install()
    assert resolve_transport("redis") is broker.Transport
    assert resolve_transport("rediss") is broker.Transport
    assert resolve_transport("sentinel") is broker.SentinelTransport
    assert issubclass(broker.SentinelTransport.Channel, kombu_redis.SentinelChannel)
