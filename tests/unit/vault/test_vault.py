"""The ScaiVault client against httpx.MockTransport: shapes, error mapping, retries, auth, paths."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import (
    AccessDenied,
    AuthenticationRequired,
    InvalidPath,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenExpired,
    UnexpectedResponse,
    VaultError,
    VaultPermanentError,
    VaultTransientError,
    VersionConflict,
    WriteOutcomeUnknown,
)
from orchestrator.settings import Settings, env_names
from orchestrator.vault.client import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    USER_AGENT,
    VaultClient,
    VersionInfo,
    quote_path,
)
from orchestrator.vault.errors import RETRY_AFTER_CAP, Call, raise_for_error
from rotators import SecretData, TransientError, VaultReader
from rotators.errors import PermanentError

URL = "https://vault.test"
TOKEN = "svt_TOKEN_SENTINEL_7731"
SENTINEL = "s3cr3t_VALUE_SENTINEL_4242"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TopRng:
    """A jitter source that always picks the top of the range, recording each range."""

    def __init__(self) -> None:
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return high


class Recorder:
    """Answers each request with the next handler (the last one repeats), recording requests."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.requests: list[httpx.Request] = []
        self.tokens: list[str] = []  # per request: the auth flow re-sends the same object

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.tokens.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        handler = self.handlers[min(len(self.requests), len(self.handlers)) - 1]
        return handler(request)


def error(status: int, code: str | None, message: str = "", **headers: str) -> Handler:
    body = {"error": {"code": code, "message": message}} if code else None
    return lambda request: httpx.Response(status, json=body, headers=headers)


def ok(body: Any = None, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body if body is not None else {})


def raises(exc: type[httpx.RequestError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return handler


SECRET_BODY = {
    "path": "integrations/salesforce/oauth",
    "version": 3,
    "data": {"client_id": "3MVG9", "client_secret": SENTINEL},
    "secret_type": "json",
    "metadata": {"description": "sf"},
    "created_at": "2026-11-27T08:00:00Z",
}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"scaivault_url": URL, "scaivault_token": TOKEN}
    values.update(overrides)
    return Settings.load(**values)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Iterator[Callable[..., VaultClient]]:
    clients: list[VaultClient] = []

    def build(recorder: Recorder, settings: Settings | None = None, **kwargs: Any) -> VaultClient:
        kwargs.setdefault("rng", TopRng())
        client = VaultClient(
            settings or make_settings(),
            transport=httpx.MockTransport(recorder),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            **kwargs,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


# --- paths ---


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("integrations/salesforce/oauth", "integrations/salesforce/oauth"),
        ("team a/key?x=1#frag", "team%20a/key%3Fx%3D1%23frag"),
        ("db/pass%word", "db/pass%25word"),
        ("ünï/ok", "%C3%BCn%C3%AF/ok"),
        ("..a/b..", "..a/b.."),
    ],
)
def test_quote_path_quotes_each_segment(path: str, quoted: str) -> None:
    assert quote_path(path) == quoted


@pytest.mark.parametrize("path", ["", "/abs/path", "a//b", "a/", "a/./b", "a/../b", "..", "."])
def test_bad_paths_are_refused_before_any_request(
    path: str, make_client: Callable[..., VaultClient]
) -> None:
    recorder = Recorder(ok(SECRET_BODY))
    client = make_client(recorder)
    for call in (
        lambda: client.read(path),
        lambda: client.versions(path),
        lambda: client.write(path, {"k": "v"}, cas=1),
        lambda: client.rotate(path),
    ):
        with pytest.raises(InvalidPath) as info:
            call()
        assert isinstance(info.value, ValueError)
    assert recorder.requests == []


def test_quoted_path_reaches_the_server_encoded(make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(ok(SECRET_BODY))
    make_client(recorder).read("team a/x/y")
    assert recorder.requests[0].url.raw_path == b"/v1/secrets/team%20a/x/y"


def test_a_scaivault_url_with_a_path_prefix_keeps_it(
    make_client: Callable[..., VaultClient],
) -> None:
    recorder = Recorder(ok(SECRET_BODY))
    make_client(recorder, make_settings(scaivault_url=f"{URL}/vault/")).read("a/b")
    assert recorder.requests[0].url == f"{URL}/vault/v1/secrets/a/b"


def test_cookies_scaivault_sets_are_never_sent_back(
    make_client: Callable[..., VaultClient],
) -> None:
    """Bearer tokens only: the client keeps no cookie jar."""
    cookie = lambda request: httpx.Response(  # noqa: E731
        200, json=SECRET_BODY, headers={"Set-Cookie": "session=abc; Path=/"}
    )
    recorder = Recorder(cookie)
    client = make_client(recorder)
    client.read("a/b")
    client.read("a/b")
    assert [r.headers.get("Cookie") for r in recorder.requests] == [None, None]


# --- the happy shapes ---


def test_read_returns_a_secret_version_with_redacted_data(
    make_client: Callable[..., VaultClient],
) -> None:
    recorder = Recorder(ok(SECRET_BODY))
    secret = make_client(recorder).read("integrations/salesforce/oauth")
    assert secret.version == 3
    assert isinstance(secret.data, SecretData)
    assert secret.data["client_secret"] == SENTINEL
    assert secret.metadata == {"description": "sf"}
    assert secret.created_at == "2026-11-27T08:00:00Z"
    assert SENTINEL not in repr(secret) and SENTINEL not in str(secret)
    request = recorder.requests[0]
    assert request.method == "GET"
    assert request.url == f"{URL}/v1/secrets/integrations/salesforce/oauth"
    assert recorder.tokens == [TOKEN]
    assert request.headers["User-Agent"] == USER_AGENT


def test_read_of_an_older_version_sends_the_version_query(
    make_client: Callable[..., VaultClient],
) -> None:
    recorder = Recorder(ok({**SECRET_BODY, "version": 1}))
    assert make_client(recorder).read("integrations/salesforce/oauth", version=1).version == 1
    assert recorder.requests[0].url.params["version"] == "1"


def test_client_is_a_vault_reader(make_client: Callable[..., VaultClient]) -> None:
    reader: VaultReader = make_client(Recorder(ok(SECRET_BODY)))
    assert reader.read("a/b").path == "integrations/salesforce/oauth"


def test_versions_oldest_first(make_client: Callable[..., VaultClient]) -> None:
    body = {
        "versions": [
            {"version": 2, "created_at": "t2", "metadata": {"rotation_id": "r2"}},
            {"version": 1, "created_at": "t1"},
        ]
    }
    recorder = Recorder(ok(body))
    infos = make_client(recorder).versions("a/b")
    assert infos == [VersionInfo(1, "t1", {}), VersionInfo(2, "t2", {"rotation_id": "r2"})]
    assert recorder.requests[0].url.path == "/v1/secrets/a/b/versions"


def test_write_merges_cas_into_options_and_returns_the_version(
    make_client: Callable[..., VaultClient],
) -> None:
    recorder = Recorder(ok({"path": "a/b", "version": 4}))
    version = make_client(recorder).write(
        "a/b",
        SecretData({"client_secret": SENTINEL}),
        cas=3,
        metadata={"rotation_id": "rot_1"},
        options={"max_versions": 10},
    )
    assert version == 4
    request = recorder.requests[0]
    assert request.method == "PUT"
    assert json.loads(request.content) == {
        "data": {"client_secret": SENTINEL},
        "secret_type": "json",
        "metadata": {"rotation_id": "rot_1"},
        "options": {"max_versions": 10, "cas": 3},
    }


def test_write_without_cas_sends_no_options(make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(ok({"version": 1}, status=201))
    assert make_client(recorder).write("a/b", {"k": "v"}, cas=None) == 1
    assert json.loads(recorder.requests[0].content) == {"data": {"k": "v"}, "secret_type": "json"}


def test_rotate_posts_and_returns_the_body(make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(ok({"status": "rotation_triggered"}, status=202))
    assert make_client(recorder).rotate("a/b") == {"status": "rotation_triggered"}
    assert recorder.requests[0].method == "POST"
    assert recorder.requests[0].url.path == "/v1/secrets/a/b/rotate"
    empty = Recorder(lambda request: httpx.Response(204))
    assert make_client(empty).rotate("a/b") == {}


@pytest.mark.parametrize(
    "secrets", [[{"path": "a/b"}, {"path": "a/c"}], ["a/b", "a/c"]], ids=["objects", "strings"]
)
def test_list_by_prefix(secrets: list[Any], make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(ok({"secrets": secrets}))
    assert make_client(recorder).list("a/") == ["a/b", "a/c"]
    assert recorder.requests[0].url.params["prefix"] == "a/"


@pytest.mark.parametrize(
    ("handler", "call"),
    [
        (lambda r: httpx.Response(200, text="<html>proxy</html>"), "read"),
        (ok({"version": "3", "data": {}}), "read"),
        (ok({"version": 3, "data": "flat"}), "read"),
        (ok({"versions": [{"no": 1}]}), "versions"),
        (ok({"nope": []}), "list"),
        (ok({"secrets": [1]}), "list"),
    ],
)
def test_malformed_success_bodies_are_unexpected_response(
    handler: Handler, call: str, make_client: Callable[..., VaultClient]
) -> None:
    client = make_client(Recorder(handler))
    with pytest.raises(UnexpectedResponse, match="SCAIVAULT_URL"):
        getattr(client, call)("a/b")


def test_write_answer_without_version_is_outcome_unknown(
    make_client: Callable[..., VaultClient],
) -> None:
    with pytest.raises(WriteOutcomeUnknown):
        make_client(Recorder(ok({"ok": True}))).write("a/b", {"k": SENTINEL}, cas=1)


# --- error mapping ---

MAPPING = [
    (429, "rate_limited", RateLimited),
    (503, "service_unavailable", ServiceUnavailable),
    (401, "authentication_required", AuthenticationRequired),
    (401, "token_expired", TokenExpired),
    (403, "access_denied", AccessDenied),
    (404, "not_found", NotFound),
    (400, "invalid_request", InvalidRequest),
    (409, "version_conflict", VersionConflict),
    # no code: the status decides
    (429, None, RateLimited),
    (401, None, AuthenticationRequired),
    (403, None, AccessDenied),
    (404, None, NotFound),
    (409, None, VersionConflict),
    (500, None, ServiceUnavailable),
    (502, None, ServiceUnavailable),
    (504, None, ServiceUnavailable),
    (400, None, InvalidRequest),
    (418, None, InvalidRequest),
    # unknown codes: 5xx transient, 4xx invalid_request
    (422, "quota_exceeded", InvalidRequest),
    (500, "internal", ServiceUnavailable),
]


@pytest.mark.parametrize(("status", "code", "kind"), MAPPING)
def test_raise_for_error_maps_codes_and_statuses(
    status: int, code: str | None, kind: type[VaultError]
) -> None:
    body = {"error": {"code": code, "message": "m"}} if code else None
    response = httpx.Response(status, json=body)
    with pytest.raises(VaultError) as info:
        raise_for_error(response, Call("GET", "a/b", "read"))
    assert type(info.value) is kind
    assert info.value.status == status
    assert info.value.path == "a/b"
    assert info.value.code == (code or info.value.code)
    transient = kind in (RateLimited, ServiceUnavailable)
    assert isinstance(info.value, TransientError) is transient
    assert isinstance(info.value, PermanentError) is not transient


def test_raise_for_error_passes_success_and_handles_non_json_errors() -> None:
    raise_for_error(httpx.Response(204), Call("GET", "a", "read"))
    with pytest.raises(ServiceUnavailable):
        raise_for_error(httpx.Response(502, text="<html>bad gateway"), Call("GET", "a", "read"))


@pytest.mark.parametrize(
    ("call", "permission"),
    [
        (lambda c: c.read("team/db"), "read"),
        (lambda c: c.versions("team/db"), "read"),
        (lambda c: c.write("team/db", {"k": "v"}, cas=1), "write"),
        (lambda c: c.rotate("team/db"), "rotate"),
        (lambda c: c.list("team/db"), "list"),
    ],
)
@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "access_denied", AccessDenied),
        (401, "authentication_required", AuthenticationRequired),
    ],
)
def test_auth_errors_name_path_and_permission_never_the_token(
    call: Callable[[VaultClient], Any],
    permission: str,
    status: int,
    code: str,
    kind: type[VaultError],
    make_client: Callable[..., VaultClient],
) -> None:
    recorder = Recorder(error(status, code))
    with pytest.raises(kind) as info:
        call(make_client(recorder))
    text = str(info.value)
    assert "'team/db'" in text and f"'{permission}'" in text
    assert TOKEN not in text and TOKEN not in repr(info.value)
    assert len(recorder.requests) == 1


def test_server_message_is_quoted_for_reads_but_never_for_writes(
    make_client: Callable[..., VaultClient],
) -> None:
    echo = error(400, "invalid_request", f"data.client_secret {SENTINEL} is too short")
    with pytest.raises(InvalidRequest) as info:
        make_client(Recorder(echo)).write("a/b", {"client_secret": SENTINEL}, cas=1)
    assert SENTINEL not in str(info.value) and SENTINEL not in repr(info.value)
    with pytest.raises(InvalidRequest, match="version must be an integer"):
        make_client(Recorder(error(400, "invalid_request", "version must be an integer"))).read(
            "a/b"
        )


# --- retry policy ---


@pytest.mark.parametrize("kind", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_reads_retry_transport_errors_then_succeed(
    kind: type[httpx.RequestError], make_client: Callable[..., VaultClient]
) -> None:
    recorder = Recorder(raises(kind), raises(kind), ok(SECRET_BODY))
    assert make_client(recorder).read("a/b").version == 3
    assert len(recorder.requests) == 3


def test_backoff_is_exponential_full_jitter_and_capped(
    make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    rng = TopRng()
    handlers = [error(503, "service_unavailable")] * 8 + [ok(SECRET_BODY)]
    make_client(Recorder(*handlers), make_settings(scaivault_retry_deadline=1000), rng=rng).read(
        "a/b"
    )
    expected = [min(BACKOFF_CAP, BACKOFF_BASE * 2**n) for n in range(8)]
    assert rng.ranges == [(0.0, 1.0)] * 8, "full jitter: a factor from 0 to 1 of the delay"
    assert fake_time.sleeps == expected
    assert expected[-1] == BACKOFF_CAP


def test_real_jitter_stays_within_bounds(
    make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    import random

    handlers = [error(503, "service_unavailable")] * 30 + [ok(SECRET_BODY)]
    settings = make_settings(scaivault_retry_deadline=10_000)
    make_client(Recorder(*handlers), settings, rng=random.Random(7)).read("a/b")
    assert len(fake_time.sleeps) == 30
    for attempt, slept in enumerate(fake_time.sleeps):
        assert 0.0 <= slept <= min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    assert len(set(fake_time.sleeps)) > 25  # jittered, not a fixed schedule
    reference = random.Random(7)
    highs = [min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) for attempt in range(30)]
    assert fake_time.sleeps == [reference.uniform(0.0, high) for high in highs]


@pytest.mark.parametrize(
    ("header", "slept"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("3600", RETRY_AFTER_CAP),
        ("-4", BACKOFF_BASE),
        ("0", BACKOFF_BASE),
    ],
)
def test_retry_after_is_honoured_and_capped(
    header: str, slept: float, make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    recorder = Recorder(error(429, "rate_limited", **{"Retry-After": header}), ok(SECRET_BODY))
    make_client(recorder).read("a/b")
    assert fake_time.sleeps == [slept]


def test_retry_after_zero_still_backs_off_exponentially(
    make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    handlers = [error(429, "rate_limited", **{"Retry-After": "0"})] * 4 + [ok(SECRET_BODY)]
    make_client(Recorder(*handlers)).read("a/b")
    assert fake_time.sleeps == [BACKOFF_BASE * 2**n for n in range(4)]


def test_retry_after_as_http_date(
    make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    recorder = Recorder(error(503, "service_unavailable", **{"Retry-After": when}), ok(SECRET_BODY))
    make_client(recorder).read("a/b")
    assert 15.0 < fake_time.sleeps[0] <= 20.0


def test_deadline_stops_retries_and_raises_the_last_error(
    make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    recorder = Recorder(error(429, "rate_limited", **{"Retry-After": "3"}))
    settings = make_settings(scaivault_retry_deadline=10)
    with pytest.raises(RateLimited) as info:
        make_client(recorder, settings).read("a/b")
    assert fake_time.sleeps == [3.0, 3.0, 3.0]
    assert len(recorder.requests) == 4
    assert info.value.retry_after == 3.0
    assert isinstance(info.value, VaultTransientError)


@pytest.mark.parametrize("status,code", [(404, "not_found"), (403, "access_denied")])
def test_permanent_errors_are_not_retried(
    status: int, code: str, make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    recorder = Recorder(error(status, code), ok(SECRET_BODY))
    with pytest.raises(VaultPermanentError):
        make_client(recorder).read("a/b")
    assert len(recorder.requests) == 1
    assert fake_time.sleeps == []


# --- writes whose response was lost ---


@pytest.mark.parametrize(
    "kind", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteTimeout]
)
def test_lost_write_response_is_not_resent(
    kind: type[httpx.RequestError], make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    recorder = Recorder(raises(kind), ok({"version": 4}))
    with pytest.raises(WriteOutcomeUnknown) as info:
        make_client(recorder).write("a/b", {"client_secret": SENTINEL}, cas=3)
    # May still land: transient for the caller to settle, never a conflict, never re-sent here.
    assert isinstance(info.value, VaultTransientError)
    assert not isinstance(info.value, VersionConflict)
    assert [r.method for r in recorder.requests] == ["PUT"]
    assert fake_time.sleeps == []
    assert "read the secret back" in str(info.value)
    assert SENTINEL not in str(info.value) and SENTINEL not in repr(info.value)
    assert info.value.__cause__ is not None and isinstance(info.value.__cause__, kind)


def test_lost_rotate_response_is_not_resent(make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(raises(httpx.ReadTimeout), ok({}))
    with pytest.raises(WriteOutcomeUnknown):
        make_client(recorder).rotate("a/b")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "first",
    [
        error(429, "rate_limited", **{"Retry-After": "1"}),
        error(503, "service_unavailable"),
        raises(httpx.ConnectError),
        raises(httpx.ConnectTimeout),
    ],
    ids=["429", "503", "connect-error", "connect-timeout"],
)
def test_writes_the_server_did_not_process_are_retried(
    first: Handler, make_client: Callable[..., VaultClient]
) -> None:
    recorder = Recorder(first, ok({"version": 4}))
    assert make_client(recorder).write("a/b", {"k": "v"}, cas=3) == 4
    assert [r.method for r in recorder.requests] == ["PUT", "PUT"]
    assert recorder.requests[0].content == recorder.requests[1].content


def test_version_conflict_is_not_retried(make_client: Callable[..., VaultClient]) -> None:
    recorder = Recorder(error(409, "version_conflict"), ok({"version": 5}))
    with pytest.raises(VersionConflict) as info:
        make_client(recorder).write("a/b", {"k": "v"}, cas=3)
    assert not isinstance(info.value, WriteOutcomeUnknown)
    assert len(recorder.requests) == 1


# --- tokens ---


def bearer(request: httpx.Request) -> str:
    return request.headers["Authorization"].removeprefix("Bearer ")


def test_token_file_is_reread_on_token_expired_and_the_request_retried(
    tmp_path: Path, make_client: Callable[..., VaultClient]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")

    def server(request: httpx.Request) -> httpx.Response:
        if bearer(request) != "new-token":
            return httpx.Response(401, json={"error": {"code": "token_expired"}})
        return httpx.Response(200, json={"version": 7})

    recorder = Recorder(server)
    client = make_client(
        recorder, make_settings(scaivault_token=None, scaivault_token_file=token_file)
    )
    with pytest.raises(TokenExpired):
        client.read("a/b")
    token_file.write_text("new-token\n")
    assert client.write("a/b", {"k": "v"}, cas=6) == 7
    assert recorder.tokens == ["old-token", "old-token", "new-token"]
    # the fresh token is kept: the next call does not start from the expired one
    assert client.write("a/b", {"k": "v"}, cas=7) == 7
    assert recorder.tokens[-1] == "new-token"


def test_token_expired_after_reread_fails_loud_without_the_token(
    tmp_path: Path, make_client: Callable[..., VaultClient], fake_time: FakeTime
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    recorder = Recorder(error(401, "token_expired", "token svt_… expired"))
    settings = make_settings(scaivault_token=None, scaivault_token_file=token_file)
    client = make_client(recorder, settings)
    with pytest.raises(TokenExpired) as info:
        client.read("a/b")
    assert len(recorder.requests) == 1  # unchanged file: re-sending the same token is pointless
    token_file.write_text(TOKEN + "-renewed-but-expired-too")
    with pytest.raises(TokenExpired):
        client.read("a/b")
    assert len(recorder.requests) == 3  # one re-read, one retry, then loud
    text = str(info.value)
    assert "expired" in text and "SCAIVAULT_TOKEN_FILE" in text
    assert TOKEN not in text and TOKEN not in repr(info.value)
    assert fake_time.sleeps == []


# --- no secret anywhere ---


def test_no_secret_or_token_in_logs_during_retries(
    log_stream: io.StringIO, make_client: Callable[..., VaultClient]
) -> None:
    recorder = Recorder(
        error(503, "service_unavailable", SENTINEL),
        raises(httpx.ConnectError),
        ok({"version": 2}),
    )
    client = make_client(recorder)
    assert client.write("a/b", {"client_secret": SENTINEL}, cas=1) == 2
    recorder.handlers = [error(503, "service_unavailable")]
    with pytest.raises(ServiceUnavailable) as info:
        client.read("a/b")
    output = log_stream.getvalue()
    assert '"event": "vault_retry"' in output and '"event": "vault_gave_up"' in output
    for line in output.splitlines():
        assert SENTINEL not in line and TOKEN not in line
    assert SENTINEL not in str(info.value) and TOKEN not in str(info.value)


def test_from_settings_and_context_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAIVAULT_URL", URL)
    monkeypatch.setenv("SCAIVAULT_TOKEN", TOKEN)
    with VaultClient.from_settings() as client:
        assert not client._http.is_closed
    assert client._http.is_closed
