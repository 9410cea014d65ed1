"""The receiver over real HTTP (uvicorn on loopback) against a real Redis and Celery worker."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.local.processes import ChildProcess, RedisServer, cli_argv, free_port
from orchestrator.receiver.app import claim_ttl
from orchestrator.receiver.request import MAX_BODY
from orchestrator.receiver.signing import sign
from orchestrator.state import history, keys
from tests.fixtures.receiver import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    LiveReceiver,
    event_body,
    start_receiver,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., LiveReceiver]
SENTINEL = "SENTINEL-do-not-leak-4f1c2a"


def queued(client: redis.Redis, queue: str = keys.TASK_QUEUE) -> list[dict[str, Any]]:
    """The kwargs of every message on the Celery queue, oldest first."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == "scaivault.rotate"
        out.append(json.loads(base64.b64decode(message["body"]))[1])
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- accepted events ----------------------------------------------------------------------


def test_rotation_due_is_queued_once_with_ids_only(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    body = event_body("evt_q1", trigger="manual")
    first = receiver.post(body)
    assert first.status_code == 202
    assert first.json()["status"] == "queued"
    again = receiver.post(body)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": "evt_q1"}
    assert queued(redis_client) == [
        {
            "path": "integrations/salesforce/oauth",
            "trigger": "manual",
            "event_id": "evt_q1",
            "from_version": 3,
            "grace_period": "48h",
            "actor": "scaivault",
            "reason": "rotation.due event",
        }
    ]
    ttl = redis_client.ttl(keys.event("evt_q1"))
    assert 7 * 86400 < ttl <= claim_ttl(receiver.app.state.receiver.max_age)


@pytest.mark.parametrize("event_type", ["secret.rotated", "secret.updated"])
def test_secret_events_are_recorded_in_history_once(
    receiver: LiveReceiver, redis_client: redis.Redis, event_type: str
) -> None:
    body = event_body("evt_r1", event_type=event_type, path="app/db", version=7)
    assert receiver.post(body).status_code == 202
    assert receiver.post(body).status_code == 200
    rows = history.read(redis_client, "app/db")
    assert [(r["event"], r["event_id"], r["new_version"]) for r in rows] == [
        (event_type, "evt_r1", "7")
    ]
    assert redis_client.llen(keys.TASK_QUEUE) == 0


def test_events_naming_paths_the_engine_never_wrote_to_leave_only_expiring_keys(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    """A stolen webhook secret can name any path: each forged event's stream expires with its
    claim, while a stream the engine writes to is kept."""
    history.append(redis_client, "app/kept", "rotation_started")
    for n, path in enumerate(["forged/a", "forged/b", "app/kept"]):
        body = event_body(f"evt_f{n}", event_type="secret.updated", path=path, version=2)
        assert receiver.post(body).status_code == 202
    assert redis_client.ttl(keys.history("app/kept")) == -1
    assert [k for k in redis_client.scan_iter() if redis_client.ttl(k) == -1] == [
        keys.history("app/kept")
    ]
    limit = claim_ttl(receiver.app.state.receiver.max_age)
    assert 0 < redis_client.ttl(keys.history("forged/a")) <= limit


def test_unknown_types_are_acknowledged_and_ignored(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    body = json.dumps(
        {"id": "evt_u1", "type": "policy.created", "created_at": "2026-11-27T08:00:00Z"}
    ).encode()
    response = receiver.post(body)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert redis_client.dbsize() == 0


# --- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-scaivault-signature": ""},
        {"x-scaivault-signature": "0" * 64},
        {"x-scaivault-signature": "sha256=" + "0" * 64},
        {"x-scaivault-signature": "a" * 5000},
    ],
    ids=["missing", "empty", "wrong", "prefixed", "overlong"],
)
def test_bad_signatures_get_one_fixed_401(
    receiver: LiveReceiver, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    response = receiver.post(event_body(), secret=None, headers=headers)
    assert response.status_code == 401
    assert response.content == b'{"error":"unauthorized"}'
    assert response.headers["www-authenticate"].startswith("HMAC-SHA256")
    assert redis_client.dbsize() == 0


def test_non_ascii_signature_bytes_get_401(receiver: LiveReceiver) -> None:
    body = event_body()
    raw = (
        b"POST /scaivault/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-ScaiVault-Signature: \xe9\xff" + b"a" * 62 + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    assert _raw_status(receiver, raw) == 401


def _raw_status(receiver: LiveReceiver, raw: bytes) -> int:
    import socket

    port = int(receiver.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_a_valid_signature_from_another_secret_is_401(receiver: LiveReceiver) -> None:
    assert receiver.post(event_body(), secret="whsec_someone_else").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"\xff\xfe not utf-8", 400, "invalid_utf8"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "too_deep"),
        (b'{"id": "evt_1", "id": "evt_2"}', 400, "invalid_json"),
        (b'{"id": NaN}', 400, "invalid_json"),
        (b'{"id": 1' + b"0" * 4500 + b"}", 400, "invalid_json"),
        (b"not json", 400, "invalid_json"),
        (event_body(created_at="2026-01-01T00:00:00Z"), 400, "too_old"),
        (b"[1, 2]", 422, "invalid_event"),
        (b'"a string"', 422, "invalid_event"),
        (b"12", 422, "invalid_event"),
        (json.dumps({"id": "evt_1", "type": "rotation.due"}).encode(), 422, "invalid_event"),
    ],
    ids=["utf8", "deep", "dupkeys", "nan", "huge", "garbage", "old", "array", "string",
         "number", "no-created-at"],
)  # fmt: skip
def test_signed_but_unacceptable_bodies(
    receiver: LiveReceiver, redis_client: redis.Redis, body: bytes, status: int, reason: str
) -> None:
    response = receiver.post(body)
    assert response.status_code == status
    assert response.json()["reason"] == reason
    assert redis_client.dbsize() == 0


def test_422_names_the_field(receiver: LiveReceiver) -> None:
    response = receiver.post(event_body(path="../etc/passwd"))
    assert (response.status_code, response.json()["field"]) == (422, "path")


@pytest.mark.parametrize("grace", ["3651d", "2914000d", "999999999d999999999h"])
def test_a_grace_period_over_the_maximum_is_422_and_queues_nothing(
    receiver: LiveReceiver, redis_client: redis.Redis, grace: str
) -> None:
    response = receiver.post(event_body("evt_long_grace", grace_period=grace))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "data.grace_period"
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", ""],
)
def test_other_content_types_are_415(receiver: LiveReceiver, content_type: str) -> None:
    assert receiver.post(event_body(), content_type=content_type).status_code == 415


def test_json_with_utf8_charset_is_fine(receiver: LiveReceiver) -> None:
    body = event_body("evt_cs")
    assert receiver.post(body, content_type="Application/JSON; charset=UTF-8").status_code == 202


def test_oversized_bodies_are_413_by_length_and_while_streaming(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    big = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    assert receiver.post(big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(80):
            yield b"x" * 1024

    headers = {"content-type": "application/json", "x-scaivault-signature": "0" * 64}
    response = receiver.http.post(receiver.events_url, content=chunks(), headers=headers)
    assert response.status_code == 413
    assert redis_client.dbsize() == 0


def test_size_is_checked_before_content_type_and_signature(receiver: LiveReceiver) -> None:
    big = b"x" * (MAX_BODY + 1)
    assert receiver.post(big, secret=None, content_type="text/plain").status_code == 413
    assert receiver.post(b"{}", secret=None, content_type="text/plain").status_code == 415


# --- slow clients -------------------------------------------------------------------------

STALLED_CLIENTS = 64


def stall(url: str) -> socket.socket:
    """A raw connection that sends the headers and 10 of 100 announced body bytes, then stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        "POST /scaivault/events HTTP/1.1\r\nHost: receiver\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n"
        f"X-ScaiVault-Signature: {'0' * 64}\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"id": "ev')
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails at ``deadline``."""
    received = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open at the deadline; got {received!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_stalled_bodies_get_408_and_are_closed_while_healthz_answers(
    receiver_factory: Factory, redis_url: str, redis_client: redis.Redis
) -> None:
    live = receiver_factory(redis_url, rotator_body_timeout=5.0)
    sockets = [stall(live.url) for _ in range(STALLED_CLIENTS)]
    try:
        wait_for(lambda: len(live.server.server_state.connections) >= STALLED_CLIENTS)
        assert live.get("/healthz").status_code == 200
        deadline = time.monotonic() + 120
        answers = [read_until_closed(sock, deadline) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    for answer in answers:
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 408 ") and b"connection: close" in head, answer
        assert b'"reason":"body_timeout"' in answer.replace(b" ", b"")
    assert redis_client.dbsize() == 0


#: The open-file limit of the ``serve`` process below: fewer than :data:`STALLED_CLIENTS`.
FILE_LIMIT = 40
_WITH_FILE_LIMIT = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def test_serve_with_few_file_descriptors_answers_healthz_once_stalled_bodies_time_out(
    redis_url: str, tmp_path: Path
) -> None:
    """Stalled bodies holding every descriptor must not keep /healthz unanswered for ever."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SCAIVAULT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ROTATOR_BODY_TIMEOUT": "2",
    }
    port = free_port()
    argv = [sys.executable, "-c", _WITH_FILE_LIMIT, str(FILE_LIMIT)]
    argv += cli_argv("serve", "--port", str(port))
    serve = ChildProcess("serve", argv, tmp_path / "serve.log", env)
    url = f"http://127.0.0.1:{port}"
    sockets: list[socket.socket] = []
    try:
        serve.start().wait_http(url + "/healthz")
        sockets = [stall(url) for _ in range(STALLED_CLIENTS)]
        serve.wait_http(url + "/healthz", timeout=120)
        deadline = time.monotonic() + 120
        for sock in sockets:
            read_until_closed(sock, deadline)  # a 408, or closed at once while out of files
    finally:
        for sock in sockets:
            sock.close()
        serve.stop()


def test_other_methods_and_paths_are_not_5xx(receiver: LiveReceiver) -> None:
    assert receiver.http.get(receiver.events_url).status_code == 405
    assert receiver.http.post(receiver.url + "/nope", content=b"{}").status_code == 404
    assert receiver.http.post(receiver.events_url + "/", content=b"{}").status_code == 404


# --- concurrency, outages, rollover -------------------------------------------------------


def test_concurrent_duplicates_publish_once(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    body = event_body("evt_race")
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = sorted(pool.map(lambda _: receiver.post(body).status_code, range(32)))
    assert statuses == [200] * 31 + [202]
    assert len(queued(redis_client)) == 1


def test_concurrent_events_are_each_queued_once_after_a_script_flush(
    receiver: LiveReceiver, redis_client: redis.Redis
) -> None:
    redis_client.script_flush()  # as after a Redis restart: the script is reloaded on NOSCRIPT
    ids = [f"evt_many_{n}" for n in range(64)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda i: receiver.post(event_body(i)).status_code, ids))
    assert statuses == [202] * 64
    assert sorted(k["event_id"] for k in queued(redis_client)) == sorted(ids)


def test_redis_stopped_mid_test_gives_503_then_recovers(
    own_redis: RedisServer, receiver_factory: Factory
) -> None:
    live = receiver_factory(own_redis.url, rotator_publish_timeout=1.0)
    client = redis.Redis.from_url(own_redis.url)
    assert live.post(event_body("evt_before")).status_code == 202
    own_redis.stop()

    body = event_body("evt_during")
    response = live.post(body)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert live.get("/readyz").status_code == 503
    assert live.get("/healthz").status_code == 200

    own_redis.start()  # same port; AOF brings back what was written before
    assert [k["event_id"] for k in queued(client)] == ["evt_before"]
    assert not client.exists(keys.event("evt_during"))
    assert live.post(body).status_code == 202  # the redelivery is not taken for a duplicate
    assert [k["event_id"] for k in queued(client)] == ["evt_before", "evt_during"]
    assert live.get("/readyz").status_code == 200
    metrics = live.get("/metrics").text
    assert 'scaivault_receiver_publish_failures_total{reason="unavailable"} 1.0' in metrics


def test_publish_timeout_gives_503_and_the_redelivery_is_safe(
    own_redis: RedisServer, receiver_factory: Factory
) -> None:
    """Redis frozen (SIGSTOP): the script may or may not have run when we give up. Either way
    the claim and the message exist together, so the redelivery yields exactly one message."""
    live = receiver_factory(own_redis.url, rotator_publish_timeout=0.5)
    body = event_body("evt_frozen")
    assert own_redis.child is not None
    own_redis.child.signal_group(signal.SIGSTOP)
    try:
        response = live.post(body)
    finally:
        own_redis.child.signal_group(signal.SIGCONT)
    assert response.status_code == 503
    client = redis.Redis.from_url(own_redis.url)
    redelivered = wait_for(lambda: live.post(body).status_code in {200, 202})
    assert redelivered
    assert [k["event_id"] for k in queued(client)] == ["evt_frozen"]
    metrics = live.get("/metrics").text
    assert 'scaivault_receiver_publish_failures_total{reason="timeout"} 1.0' in metrics


def test_secret_rollover(
    redis_url: str, receiver_factory: Factory, redis_client: redis.Redis, log_stream: io.StringIO
) -> None:
    both = receiver_factory(
        redis_url, scaivault_webhook_secret=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}"
    )
    assert both.post(event_body("evt_old"), secret=OLD_WEBHOOK_SECRET).status_code == 202
    assert both.post(event_body("evt_new"), secret=WEBHOOK_SECRET).status_code == 202
    metrics = both.get("/metrics").text
    assert 'scaivault_receiver_signature_matches_total{secret_position="2"} 1.0' in metrics
    assert 'scaivault_receiver_signature_matches_total{secret_position="1"} 1.0' in metrics
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    accepted = {
        e["event_id"]: e["secret_position"]
        for r in lines
        if r["event"] == "events_accepted"
        for e in r["events"]
    }
    assert accepted == {"evt_old": 2, "evt_new": 1}

    retired = receiver_factory(redis_url)  # the old secret removed
    assert retired.post(event_body("evt_old2"), secret=OLD_WEBHOOK_SECRET).status_code == 401
    assert retired.post(event_body("evt_new2")).status_code == 202
    assert len(queued(redis_client)) == 3


def test_no_secret_in_redis_logs_or_metrics(
    receiver: LiveReceiver, redis_url: str, log_stream: io.StringIO
) -> None:
    raw = redis.Redis.from_url(redis_url)
    body = event_body("evt_leak", client_secret=SENTINEL, password=SENTINEL)
    assert receiver.post(body).status_code == 202
    assert (
        receiver.post(body, secret="whsec_wrong", headers={"x-sentinel": SENTINEL}).status_code
        == 401
    )
    assert (
        receiver.post(b'{"x": "' + SENTINEL.encode() + b'"', secret=WEBHOOK_SECRET).status_code
        == 400
    )
    dump = b""
    for key in raw.keys("*"):
        dump += key + (raw.dump(key) or b"")
        if raw.type(key) == b"list":
            dump += b"".join(raw.lrange(key, 0, -1))
    for text in (SENTINEL, WEBHOOK_SECRET):
        assert text.encode() not in dump
        assert base64.b64encode(text.encode())[:20] not in dump
        assert text not in log_stream.getvalue()
        assert text not in receiver.get("/metrics").text
    assert "evt_leak" in log_stream.getvalue()  # the log was really captured


# --- properties ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_receiver(redis_server: RedisServer) -> Iterator[LiveReceiver]:
    live = start_receiver(redis_server.url)
    yield live
    live.stop()


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=512)
    | st.builds(lambda v: json.dumps(v).encode(), st.dictionaries(st.text(max_size=10), st.text())),
    signature=st.none() | header_text | st.just("0" * 64),
    content_type=st.sampled_from(["application/json", "text/plain", "application/json; x=1"]),
)
def test_unsigned_requests_never_publish_and_never_5xx(
    shared_receiver: LiveReceiver, body: bytes, signature: str | None, content_type: str
) -> None:
    client = redis.Redis.from_url(_redis_url(shared_receiver))
    before = client.llen(keys.TASK_QUEUE)
    # Raw bytes on a socket: HTTP clients refuse to send many of the header values we want.
    head = b"POST /scaivault/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Type: " + content_type.encode() + b"\r\n"
    if signature is not None:
        head += b"X-ScaiVault-Signature: " + signature.encode("latin-1") + b"\r\n"
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    status = _raw_status(shared_receiver, head + body)
    # 401/413/415 from the receiver, or 400 from uvicorn for bytes HTTP forbids in a header
    assert status in {400, 401, 413, 415}
    assert client.llen(keys.TASK_QUEUE) == before
    client.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.fixed_dictionaries(
        {"id": st.from_regex(r"evt_[a-z0-9]{1,12}", fullmatch=True)},
        optional={
            "type": st.sampled_from(["rotation.due", "secret.updated", "other.thing"])
            | json_values,
            "created_at": st.just("2026-11-27T08:00:00Z") | json_values,
            "path": st.just("a/b") | json_values,
            "data": st.fixed_dictionaries({}, optional={"version": json_values}) | json_values,
        },
    ),
    garbage=st.binary(max_size=8),
)
def test_signed_arbitrary_json_is_never_5xx(
    shared_receiver: LiveReceiver, fields: dict[str, Any], garbage: bytes
) -> None:
    body = json.dumps(fields).encode() + garbage
    response = shared_receiver.post(body)
    assert response.status_code in {200, 202, 400, 422}


def _redis_url(live: LiveReceiver) -> str:
    return str(live.app.state.receiver.settings.redis_url)


# --- real processes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "redis_url", "message"),
    [
        ("", "redis://127.0.0.1:1/0", "SCAIVAULT_WEBHOOK_SECRET is not set"),
        (" , ", "redis://127.0.0.1:1/0", "SCAIVAULT_WEBHOOK_SECRET is not set"),
        ("whsec_x", "sentinel://127.0.0.1:1/x", "db of a Sentinel URL must be a number"),
    ],
    ids=["empty", "blank-list", "bad-sentinel-url"],
)
def test_serve_refuses_to_start_with_unusable_settings(
    secret: str, redis_url: str, message: str
) -> None:
    import subprocess

    env = {**os.environ, "SCAIVAULT_WEBHOOK_SECRET": secret, "REDIS_URL": redis_url}
    done = subprocess.run(
        cli_argv("serve", "--port", str(free_port())), env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "whsec_x" not in done.stderr + done.stdout


def test_a_real_celery_worker_consumes_what_serve_publishes(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from tests.integration.receiver.receiver_probe_app import probe_key

    env = {**os.environ, "REDIS_URL": redis_url, "SCAIVAULT_WEBHOOK_SECRET": WEBHOOK_SECRET}
    root = Path(__file__).resolve().parents[3]
    port = free_port()
    serve = ChildProcess(
        "serve", cli_argv("serve", "--port", str(port)), tmp_path / "serve.log", env, root
    )
    probe_app = "tests.integration.receiver.receiver_probe_app"
    worker_argv = [
        sys.executable, "-m", "celery", "-A", probe_app, "worker",
        "-Q", keys.TASK_QUEUE, "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = ChildProcess("worker", worker_argv, tmp_path / "worker.log", env, root)
    try:
        serve.start()
        worker.start()
        serve.wait_http(f"http://127.0.0.1:{port}/healthz")
        body = event_body("evt_worker", grace_period=None)
        response = httpx.post(
            f"http://127.0.0.1:{port}/scaivault/events",
            content=body,
            headers={
                "content-type": "application/json",
                "x-scaivault-signature": sign(body, WEBHOOK_SECRET),
            },
        )
        assert response.status_code == 202, response.text
        got = wait_for(lambda: redis_client.get(probe_key("evt_worker")), timeout=60)
        assert json.loads(got) == {
            "path": "integrations/salesforce/oauth",
            "trigger": "schedule",
            "event_id": "evt_worker",
            "from_version": 3,
            "grace_period": None,
            "actor": "scaivault",
            "reason": "rotation.due event",
        }
        assert redis_client.llen(keys.TASK_QUEUE) == 0
        assert WEBHOOK_SECRET not in serve.log_tail(1000)
    finally:
        worker.stop()
        serve.stop()


def test_openapi_document_describes_the_endpoint(receiver: LiveReceiver) -> None:
    import jsonschema

    document = receiver.get("/openapi.json").json()
    post = document["paths"]["/scaivault/events"]["post"]
    assert set(post["responses"]) == {
        "200", "202", "400", "401", "408", "413", "415", "422", "503"
    }  # fmt: skip
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(json.loads(event_body()), schema)
    accepted = receiver.post(event_body("evt_doc"))
    jsonschema.validate(
        accepted.json(), post["responses"]["202"]["content"]["application/json"]["schema"]
    )
