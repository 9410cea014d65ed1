"""Redis connections from REDIS_URL, plain or through Sentinel.

Every Redis client of the runtime and the Celery broker settings are built here, so that a
``sentinel://`` URL works the same for the worker, beat, receiver and CLI. The Sentinel URL
format is Celery/kombu's own: one ``sentinel://`` part per Sentinel, separated by ``;``, the
master's password and db number written as in a ``redis://`` URL::

    sentinel://:password@10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0

The master's name comes from ``REDIS_SENTINEL_MASTER``. ``sentinels://`` is the same with TLS
to the Sentinels and to the master; ``ssl_cert_reqs`` (``required``, ``optional``, ``none``),
``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` may follow as query parameters, as in a
``rediss://`` URL. As in kombu, the password is the master's: Sentinels are asked without one.
``redis://``, ``rediss://`` and ``unix://`` URLs go to ``from_url`` unchanged.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

#: The master name Sentinel monitors when ``REDIS_SENTINEL_MASTER`` is not set.
DEFAULT_MASTER = "mymaster"
#: Port of a Sentinel part that names none.
SENTINEL_PORT = 26379
#: Seconds to connect to one Sentinel when the caller gives no socket timeout.
SENTINEL_TIMEOUT = 5.0

_SCHEMES = ("sentinel", "sentinels")
_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``sentinel://`` or ``sentinels://`` URL (the password never in its repr)."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: tuple[tuple[str, Any], ...] = ()

    def master_kwargs(self) -> dict[str, Any]:
        """Connection keywords for the master: db, credentials and TLS."""
        kwargs: dict[str, Any] = {"db": self.db}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs | self.ssl_kwargs()

    def ssl_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS keywords (empty for plain ``sentinel://``)."""
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_cert_reqs": ssl.CERT_REQUIRED} | dict(self.tls_options)

    def broker_url(self) -> str:
        """The URL kombu's Sentinel transport takes (it only knows the ``sentinel`` scheme)."""
        auth = ""
        if self.username is not None or self.password is not None:
            auth = f"{_quote(self.username or '')}:{_quote(self.password or '')}@"
        parts = [
            f"sentinel://{auth if i == 0 else ''}{_netloc(host, port)}/{self.db}"
            for i, (host, port) in enumerate(self.sentinels)
        ]
        return ";".join(parts)


def is_sentinel(url: str) -> bool:
    """True when ``url`` reaches Redis through Sentinel."""
    return urlsplit(url).scheme in _SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a Sentinel URL; raise ValueError (never echoing a password) when malformed."""
    parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
    if not parts:
        raise ValueError("empty Sentinel URL")
    schemes = {p.scheme for p in parts}
    if len(schemes) != 1 or not schemes <= set(_SCHEMES):
        raise ValueError("every part of a Sentinel URL must be sentinel:// (or all sentinels://)")
    tls = schemes == {"sentinels"}
    return SentinelURL(
        sentinels=tuple(_address(p.hostname, p) for p in parts),
        db=_one("db", [_db(p.path) for p in parts if p.path.strip("/")], 0),
        username=_one("username", [unquote(p.username) for p in parts if p.username], None),
        password=_one("password", [unquote(p.password) for p in parts if p.password], None),
        tls=tls,
        tls_options=_tls_options([q for p in parts for q in parse_qsl(p.query)], tls),
    )


def redis_client(url: str, *, master: str = DEFAULT_MASTER, **options: Any) -> redis.Redis:
    """A Redis client for ``url``: through Sentinel to ``master`` for ``sentinel://`` URLs.

    ``options`` are redis-py connection keywords (``socket_timeout``, ``decode_responses``,
    ``retry``, ...); the socket timeouts apply to the Sentinels too.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, options, Retry)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, **(target.master_kwargs() | options)
    )
    return client


def async_redis_client(
    url: str, *, master: str = DEFAULT_MASTER, **options: Any
) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`redis_client`."""
    if not is_sentinel(url):
        return redis.asyncio.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, options, AsyncRetry)
    )
    client: redis.asyncio.Redis = sentinel.master_for(master, **(target.master_kwargs() | options))
    return client


def broker_settings(
    url: str, *, master: str = DEFAULT_MASTER, transport_options: dict[str, Any]
) -> dict[str, Any]:
    """Celery's ``broker_url``, ``broker_transport_options`` (and ``broker_use_ssl``) for ``url``.

    ``transport_options`` (e.g. the visibility timeout) are kept; Sentinel URLs add the master
    name and the Sentinels' connection keywords (timeout, no retry, TLS).
    """
    if not is_sentinel(url):
        return {"broker_url": url, "broker_transport_options": dict(transport_options)}
    target = parse_sentinel_url(url)
    settings: dict[str, Any] = {
        "broker_url": target.broker_url(),
        "broker_transport_options": dict(transport_options)
        | {"master_name": master, "sentinel_kwargs": _sentinel_kwargs(target, {})},
    }
    if target.tls:
        tls = target.ssl_kwargs()
        settings["broker_use_ssl"] = {k: v for k, v in tls.items() if k != "ssl"}
    return settings


def _sentinel_kwargs(
    target: SentinelURL, options: dict[str, Any], retry: type[Retry | AsyncRetry] = Retry
) -> dict[str, Any]:
    """Keywords for the Sentinel connections: the caller's socket options (else a bound), TLS,
    and no retry. Discovery already moves on to the next Sentinel; redis-py's default retry
    would instead spend seconds of backoff on a dead one for every new master connection."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT}
    kwargs |= {k: v for k, v in options.items() if k.startswith("socket_")}
    return kwargs | {"retry": retry(NoBackoff(), 0)} | target.ssl_kwargs()


def _address(host: str | None, part: Any) -> tuple[str, int]:
    if not host:
        raise ValueError("a Sentinel URL part has no host; expected sentinel://host:26379")
    try:
        port = part.port
    except ValueError:
        raise ValueError(f"Sentinel {host} has an invalid port") from None
    return host, port or SENTINEL_PORT


def _db(path: str) -> int:
    value = path.strip("/")
    if not value.isdigit():
        raise ValueError("the db of a Sentinel URL must be a number, e.g. sentinel://host:26379/0")
    return int(value)


def _one(what: str, values: list[Any], default: Any) -> Any:
    if len(set(values)) > 1:
        raise ValueError(f"the parts of the Sentinel URL disagree on the {what}")
    return values[0] if values else default


def _tls_options(query: list[tuple[str, str]], tls: bool) -> tuple[tuple[str, Any], ...]:
    options: dict[str, Any] = {}
    for key, value in query:
        if not tls:
            raise ValueError(f"{key}: TLS options need sentinels:// (TLS), not sentinel://")
        if key == "ssl_cert_reqs":
            if value not in _CERT_REQS:
                raise ValueError("ssl_cert_reqs must be required, optional or none")
            options[key] = _CERT_REQS[value]
        elif key in _TLS_FILES:
            options[key] = value
        else:
            raise ValueError(
                f"unknown Sentinel URL option {key!r}; expected ssl_cert_reqs "
                "(required, optional, none), ssl_ca_certs, ssl_certfile or ssl_keyfile"
            )
    return tuple(options.items())


def _quote(value: str) -> str:
    return quote(value, safe="")


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
