"""kombu's Redis transports with a workaround that keeps a worker alive across a Redis restart.

kombu 5.7's Redis channel (``kombu/transport/redis.py``) stops a Celery worker when Redis
restarts while the worker holds unacknowledged messages, with the error of kombu#582 and
kombu#970: ``AttributeError: 'NoneType' object has no attribute 'hostname'`` in
``Channel._connparams``, reached from ``QoS.restore_unacked``. How:

1. ``Channel.close`` first reads the reply of a ``BRPOP`` still outstanding (added by
   kombu#1733 so a popped message is not dropped) and expects a message or nothing. On a dead
   connection that read raises a connection error, the close stops there, and the channel
   stays open with its unacknowledged deliveries.
2. Celery's consumer then collects the connection, which detaches the transport from its
   ``Connection`` (``transport.client = None``), and closes it again. The second close restores
   the deliveries, which needs a new connection pool, and ``_connparams`` reads
   ``self.connection.client.hostname``. The ``AttributeError`` is no connection error to kombu
   or Celery, so the worker ends ("Unrecoverable error"). A late ``ack`` or ``reject`` on such
   a channel (a task that finished while the connection was lost) meets the same error.

The channels below change two things: a connection error while reading that last ``BRPOP``
reply counts as "no reply", so a close always completes; and a channel whose connection is
gone raises :class:`redis.exceptions.ConnectionError` when it needs a new pool, so kombu and
Celery handle it as the connection loss it is (the restore or the late ack is given up and
logged, the consumer reconnects). Nothing is lost by giving them up: the messages stay in
kombu's ``unacked`` hash in Redis and come back after ``visibility_timeout``; a rotation in
flight is re-driven by the sweep once its lease expires, and a ``rotation.due`` whose message
``BRPOP`` took but never delivered is published again from the pending events
(docs/architecture.md#failures-and-recovery).

:func:`install` puts these transports under kombu's names ``redis``, ``rediss`` and
``sentinel``; :mod:`orchestrator.worker.app` calls it before any broker connection exists.
"""

from __future__ import annotations

import contextlib
from queue import Empty
from typing import Any

import redis.exceptions
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

#: The message of the connection error a channel raises once its connection is gone.
DETACHED = "the broker connection of this channel was lost and closed"


class _RestartSafe:
    """The two changes, mixed into kombu's plain and Sentinel Redis channels."""

    _in_poll: Any
    connection: Any
    connection_errors: tuple[type[BaseException], ...]

    def close(self) -> None:
        """Close, treating an unreadable outstanding ``BRPOP`` reply as no reply."""
        if self._in_poll:
            # kombu reads it so that a message BRPOP took is not dropped; a dead connection has
            # no reply to read (kombu disconnects it and clears _in_poll, so the close goes on).
            with contextlib.suppress(Empty, *self.connection_errors):
                self._brpop_read()  # type: ignore[attr-defined]
        super().close()  # type: ignore[misc]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu's pool parameters; a connection error once the connection is gone."""
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError(DETACHED)
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params


class Channel(_RestartSafe, kombu_redis.Channel):
    """kombu's Redis channel, restart-safe."""


class SentinelChannel(_RestartSafe, kombu_redis.SentinelChannel):
    """kombu's Redis Sentinel channel, restart-safe."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (``redis://``, ``rediss://``) with :class:`Channel`."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Redis Sentinel transport (``sentinel://``) with :class:`SentinelChannel`."""

    Channel = SentinelChannel


def install() -> None:
    """Make kombu use these transports for ``redis``, ``rediss`` and ``sentinel`` URLs."""
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["sentinel"] = f"{__name__}:SentinelTransport"
