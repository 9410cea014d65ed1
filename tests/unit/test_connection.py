"""Unit tests for orchestrator.connection: Sentinel URL parsing, clients and broker settings."""

from __future__ import annotations

import ssl

import pytest
import redis
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.sentinel

from orchestrator import connection
from orchestrator.cli.output import safe_url
from orchestrator.connection import SentinelURL, parse_sentinel_url
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings

PASSWORD = "pw-sentinel-unit-7f3a"


def test_several_sentinels_with_password_and_db() -> None:
    url = f"sentinel://:{PASSWORD}@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2;sentinel://h3"
    target = parse_sentinel_url(url)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("h3", 26379))
    assert (target.db, target.username, target.password, target.tls) == (2, None, PASSWORD, False)
    assert PASSWORD not in repr(target)


def test_username_percent_encoded_password_and_default_db() -> None:
    target = parse_sentinel_url("sentinel://app:p%40ss%3Bw@h1:1;sentinel://h2:2")
    assert (target.username, target.password, target.db) == ("app", "p@ss;w", 0)
    assert target.master_kwargs() == {"db": 0, "username": "app", "password": "p@ss;w"}


def test_sentinels_scheme_means_tls_with_options() -> None:
    target = parse_sentinel_url(
        "sentinels://h1:26379/0?ssl_cert_reqs=none&ssl_ca_certs=ca.pem;sentinels://h2:26379/0"
    )
    assert target.tls
    assert target.ssl_kwargs() == {
        "ssl": True,
        "ssl_cert_reqs": ssl.CERT_NONE,
        "ssl_ca_certs": "ca.pem",
    }
    assert parse_sentinel_url("sentinels://h1").ssl_kwargs()["ssl_cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://h1:1/0;redis://h2:2/0", "every part"),
        ("sentinel://h1:1/0;sentinels://h2:2/0", "every part"),
        ("sentinel://:1/0", "no host"),
        ("sentinel://h1:port/0", "invalid port"),
        ("sentinel://h1:1/zero", "must be a number"),
        ("sentinel://h1:1/0;sentinel://h2:2/1", "disagree on the db"),
        (f"sentinel://:{PASSWORD}@h1:1;sentinel://:other@h2:2", "disagree on the password"),
        ("sentinel://h1:1/0?ssl_ca_certs=ca.pem", "need sentinels://"),
        ("sentinels://h1:1/0?ssl_cert_reqs=maybe", "required, optional or none"),
        ("sentinels://h1:1/0?socket_timeout=1", "unknown Sentinel URL option"),
    ],
)
def test_malformed_urls_are_refused_without_echoing_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_sentinel_url(url)
    assert PASSWORD not in str(caught.value)


def test_settings_refuse_a_malformed_sentinel_url_by_name() -> None:
    with pytest.raises(ConfigError, match=r"REDIS_URL: .*must be a number"):
        Settings.load(REDIS_URL=f"sentinel://:{PASSWORD}@h1:1/x")


def test_master_name_setting_defaults_to_mymaster() -> None:
    assert Settings.load().redis_sentinel_master == "mymaster"
    assert Settings.load(REDIS_SENTINEL_MASTER="ha").redis_sentinel_master == "ha"


def test_broker_url_is_kombus_format_with_credentials_on_the_first_part() -> None:
    target = SentinelURL((("h1", 1), ("::1", 2)), db=3, password="a/b")
    assert target.broker_url() == "sentinel://:a%2Fb@h1:1/3;sentinel://[::1]:2/3"


def test_broker_settings_keep_transport_options_and_add_the_master() -> None:
    conf = connection.broker_settings(
        "sentinel://h1:1/0;sentinel://h2:2/0", master="ha", transport_options={"x": 1}
    )
    assert conf["broker_url"] == "sentinel://h1:1/0;sentinel://h2:2/0"
    options = conf["broker_transport_options"]
    assert (options["x"], options["master_name"]) == (1, "ha")
    assert "broker_use_ssl" not in conf
    sentinel = options["sentinel_kwargs"]
    assert sentinel["socket_connect_timeout"] == connection.SENTINEL_TIMEOUT
    assert sentinel["retry"].get_retries() == 0, "a dead Sentinel must not cost backoff"


def test_broker_settings_with_tls_use_ssl_for_master_and_sentinels() -> None:
    conf = connection.broker_settings("sentinels://h1:1/0", transport_options={})
    assert conf["broker_url"] == "sentinel://h1:1/0"
    assert conf["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert conf["broker_transport_options"]["master_name"] == "mymaster"
    assert conf["broker_transport_options"]["sentinel_kwargs"]["ssl"] is True


@pytest.mark.parametrize("url", ["redis://h:1/4", "rediss://h:1/0", "unix:///tmp/r.sock"])
def test_plain_urls_are_unchanged(url: str) -> None:
    conf = connection.broker_settings(url, master="ha", transport_options={"x": 1})
    assert conf == {"broker_url": url, "broker_transport_options": {"x": 1}}
    client = connection.redis_client(url, socket_timeout=3)
    assert type(client.connection_pool) is redis.ConnectionPool
    client.close()


def test_sync_client_goes_through_sentinel_to_the_named_master() -> None:
    client = connection.redis_client(
        f"sentinel://:{PASSWORD}@h1:1/5;sentinel://h2:2/5",
        master="ha",
        socket_timeout=4,
        decode_responses=True,
    )
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "ha"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (5, PASSWORD, 4)
    assert kwargs["decode_responses"] is True
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 4 for s in sentinels)
    assert all(s.get_retry().get_retries() == 0 for s in sentinels)
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)
    client.close()


def test_async_client_goes_through_sentinel_with_tls() -> None:
    client = connection.async_redis_client("sentinels://h1:1/0", master="ha")
    pool = client.connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.connection_class is redis.asyncio.sentinel.SentinelManagedSSLConnection
    [sentinel] = pool.sentinel_manager.sentinels
    assert sentinel.connection_pool.connection_class is redis.asyncio.connection.SSLConnection
    kwargs = sentinel.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["socket_connect_timeout"] == connection.SENTINEL_TIMEOUT


def test_safe_url_hides_the_password_of_every_sentinel_part() -> None:
    url = f"sentinel://:{PASSWORD}@h1:1/0;sentinel://:{PASSWORD}@h2:2/0;sentinel://h3:3/0"
    assert safe_url(url) == "sentinel://***@h1:1/0;sentinel://***@h2:2/0;sentinel://h3:3/0"
