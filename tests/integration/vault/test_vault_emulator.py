"""The ScaiVault client against the real emulator over HTTP on 127.0.0.1.

Every spec error code is produced by the emulator (its own checks or fault injection), and the
client's answer is checked against what the emulator saw (fault ``hits``, stored versions).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import (
    AccessDenied,
    AuthenticationRequired,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenExpired,
    VaultError,
    VersionConflict,
    WriteOutcomeUnknown,
)
from orchestrator.local.processes import free_port
from orchestrator.settings import Settings, env_names
from orchestrator.vault.client import VaultClient, VersionInfo
from rotators import SecretData
from tests.fixtures.emulator import Emulator

pytestmark = pytest.mark.integration

PATH = "integrations/salesforce/oauth"
SENTINEL = "sf_SECRET_SENTINEL_vault_9d3e"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def connect(emulator: Emulator) -> Iterator[Callable[..., VaultClient]]:
    """Build clients on the emulator (admin token unless told otherwise); closed afterwards."""
    clients: list[VaultClient] = []

    def build(**overrides: Any) -> VaultClient:
        values: dict[str, Any] = {
            "scaivault_url": emulator.url,
            "scaivault_token": emulator.admin_token,
            "scaivault_retry_deadline": 5.0,
            "scaivault_read_timeout": 2.0,
        }
        values.update(overrides)
        client = VaultClient(Settings.load(**values))
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def hits(emulator: Emulator) -> int:
    return sum(fault["hits"] for fault in emulator.faults())


def test_read_write_versions_list_rotate_round_trip(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    assert vault.write(PATH, {"client_id": "3MVG9", "client_secret": "v1"}, cas=None) == 1
    new = vault.write(
        PATH,
        SecretData({"client_id": "3MVG9", "client_secret": SENTINEL}),
        cas=1,
        metadata={"rotation_id": "rot_1", "description": "sf"},
        options={"max_versions": 5},
    )
    assert new == 2
    current = vault.read(PATH)
    assert (current.path, current.version, current.data["client_secret"]) == (PATH, 2, SENTINEL)
    assert current.metadata == {"rotation_id": "rot_1", "description": "sf"}
    assert current.created_at and SENTINEL not in repr(current)
    assert vault.read(PATH, version=1).data == {"client_id": "3MVG9", "client_secret": "v1"}
    infos = vault.versions(PATH)
    assert [info.version for info in infos] == [1, 2]
    assert isinstance(infos[1], VersionInfo) and infos[1].metadata["rotation_id"] == "rot_1"
    emulator.put_secret("integrations/other/key", {"k": "v"})
    emulator.put_secret("elsewhere/key", {"k": "v"})
    assert sorted(vault.list("integrations/")) == ["integrations/other/key", PATH]
    answer = vault.rotate(PATH)
    assert answer["event_id"]


def test_paths_with_spaces_and_unicode_round_trip(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    path = "team a/ünï key/pass?word#1"
    assert vault.write(path, {"k": "v"}, cas=None) == 1
    assert vault.read(path).path == path
    assert vault.list("team a/") == [path]


def test_cas_mismatch_is_version_conflict(connect: Callable[..., VaultClient]) -> None:
    vault = connect()
    vault.write(PATH, {"k": "v1"}, cas=None)
    vault.write(PATH, {"k": "v2"}, cas=1)
    with pytest.raises(VersionConflict) as info:
        vault.write(PATH, {"k": SENTINEL}, cas=1)
    assert info.value.status == 409 and not isinstance(info.value, WriteOutcomeUnknown)
    assert SENTINEL not in str(info.value)
    assert vault.read(PATH).version == 2


def test_missing_secret_and_version_are_not_found(connect: Callable[..., VaultClient]) -> None:
    vault = connect()
    with pytest.raises(NotFound, match="integrations/nope"):
        vault.read("integrations/nope")
    vault.write(PATH, {"k": "v"}, cas=None)
    with pytest.raises(NotFound):
        vault.read(PATH, version=9)
    with pytest.raises(NotFound):
        vault.rotate("integrations/nope")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("authentication_required", AuthenticationRequired),
        ("token_expired", TokenExpired),
        ("access_denied", AccessDenied),
        ("not_found", NotFound),
        ("invalid_request", InvalidRequest),
        ("version_conflict", VersionConflict),
        ("payload_too_large", InvalidRequest),
        ("method_not_allowed", InvalidRequest),
    ],
)
def test_injected_permanent_errors_are_raised_without_retry(
    code: str, kind: type[VaultError], emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    vault.write(PATH, {"k": "v"}, cas=None)
    emulator.fault(match=PATH, code=code, count=3)
    with pytest.raises(kind) as info:
        vault.read(PATH)
    assert type(info.value) is kind and info.value.code == code
    assert hits(emulator) == 1


@pytest.mark.parametrize(
    ("code", "retry_after"),
    [("rate_limited", 1), ("service_unavailable", 1), ("internal_error", None)],
)
def test_injected_transient_errors_are_retried_until_success(
    code: str,
    retry_after: int | None,
    emulator: Emulator,
    connect: Callable[..., VaultClient],
) -> None:
    vault = connect()
    emulator.put_secret(PATH, {"k": "v"})
    emulator.fault(match=PATH, code=code, count=2, retry_after=retry_after)
    assert vault.read(PATH).version == 1
    assert vault.write(PATH, {"k": "v2"}, cas=1) == 2  # a refused write is safe to re-send
    assert hits(emulator) == 2
    assert [v.version for v in vault.versions(PATH)] == [1, 2]


def test_retries_stop_at_the_deadline(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect(scaivault_retry_deadline=2.7)
    emulator.put_secret(PATH, {"k": "v"})
    emulator.fault(match=PATH, code="rate_limited", retry_after=1)
    with pytest.raises(RateLimited) as info:
        vault.read(PATH)
    assert info.value.retry_after == 1.0 and info.value.status == 429
    assert hits(emulator) == 3  # sent, +1s, +1s, and a third second would pass the deadline


def test_lost_write_response_is_not_resent_and_the_write_is_found(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    emulator.put_secret(PATH, {"k": "v1"})
    emulator.fault(match=PATH, code="drop_response", count=1, methods=["PUT"])
    with pytest.raises(WriteOutcomeUnknown) as info:
        vault.write(PATH, {"k": SENTINEL}, cas=1, metadata={"rotation_id": "rot_lost"})
    assert not isinstance(info.value, VersionConflict), "an unknown outcome is not a conflict"
    assert SENTINEL not in str(info.value)
    assert hits(emulator) == 1
    # the caller's check: version 2 carries its rotation_id, so its write landed once
    assert [(v.version, v.metadata.get("rotation_id")) for v in vault.versions(PATH)] == [
        (1, None),
        (2, "rot_lost"),
    ]
    with pytest.raises(VersionConflict):  # what a blind re-send would have met
        vault.write(PATH, {"k": SENTINEL}, cas=1)


def test_dropped_write_request_is_outcome_unknown_and_did_not_land(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    emulator.put_secret(PATH, {"k": "v1"})
    emulator.fault(match=PATH, code="drop_request", count=1, methods=["PUT"])
    with pytest.raises(WriteOutcomeUnknown):
        vault.write(PATH, {"k": "v2"}, cas=1)
    assert [v.version for v in vault.versions(PATH)] == [1]
    assert vault.write(PATH, {"k": "v2"}, cas=1) == 2


def test_lost_read_response_is_retried(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect()
    emulator.put_secret(PATH, {"k": "v1"})
    emulator.fault(match=PATH, code="drop_response", count=2, methods=["GET"])
    assert vault.read(PATH).data == {"k": "v1"}
    assert hits(emulator) == 2


def test_read_timeout_is_retried(emulator: Emulator, connect: Callable[..., VaultClient]) -> None:
    vault = connect(scaivault_read_timeout=0.3)
    emulator.put_secret(PATH, {"k": "v1"})
    emulator.fault(match=PATH, latency=1.0, count=1, methods=["GET"])
    assert vault.read(PATH).version == 1
    assert hits(emulator) == 1


def test_unreachable_vault_is_service_unavailable(connect: Callable[..., VaultClient]) -> None:
    vault = connect(scaivault_url=f"http://127.0.0.1:{free_port()}", scaivault_retry_deadline=0.5)
    with pytest.raises(ServiceUnavailable, match="cannot reach ScaiVault") as info:
        vault.read(PATH)
    assert info.value.status is None and info.value.__cause__ is not None


def test_expired_token_file_is_reread_then_fails_loud(
    tmp_path: Path, emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    emulator.put_secret(PATH, {"k": "v"})
    old = emulator.token("sa:x", ttl="1s", paths=["integrations/**"], permissions=["read"])
    token_file = tmp_path / "token"
    token_file.write_text(old + "\n")
    vault = connect(scaivault_token=None, scaivault_token_file=token_file)
    assert vault.read(PATH).version == 1
    emulator.advance("2s")
    with pytest.raises(TokenExpired) as info:
        vault.read(PATH)
    assert "expired" in str(info.value) and "SCAIVAULT_TOKEN_FILE" in str(info.value)
    assert old not in str(info.value) and old not in repr(info.value)
    token_file.write_text(emulator.token("sa:x", ttl="1h") + "\n")  # renewed by an agent
    assert vault.read(PATH).version == 1
    reads = [e for e in emulator.audit(path=PATH, identity="sa:x") if e["action"] == "read"]
    assert [e["outcome"] for e in reads] == ["ok", "ok"]


def test_access_denied_and_unknown_token_name_path_and_permission(
    emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    emulator.put_secret(PATH, {"k": "v"})
    reader = emulator.token("sa:reader", paths=[PATH], permissions=["read"])
    vault = connect(scaivault_token=reader)
    assert vault.read(PATH).version == 1
    with pytest.raises(AccessDenied) as denied:
        vault.write(PATH, {"k": SENTINEL}, cas=1)
    with pytest.raises(AccessDenied, match="'rotate'"):
        vault.rotate(PATH)
    text = str(denied.value)
    assert f"'{PATH}'" in text and "'write'" in text
    assert reader not in text and SENTINEL not in text
    stranger = connect(scaivault_token="svt_not-issued-by-anyone")
    with pytest.raises(AuthenticationRequired) as unknown:
        stranger.read(PATH)
    assert "svt_not-issued-by-anyone" not in str(unknown.value)
    assert "'read'" in str(unknown.value)


def test_no_secret_in_logs_or_errors_through_faults(
    log_stream: io.StringIO, emulator: Emulator, connect: Callable[..., VaultClient]
) -> None:
    vault = connect(scaivault_retry_deadline=1.5)
    vault.write(PATH, {"client_secret": SENTINEL}, cas=None)
    emulator.fault(match=PATH, code="service_unavailable", count=1, retry_after=0)
    assert vault.read(PATH).data["client_secret"] == SENTINEL
    emulator.fault(match=PATH, code="drop_response", count=1, methods=["PUT"])
    errors: list[BaseException] = []
    with pytest.raises(WriteOutcomeUnknown) as lost:
        vault.write(PATH, {"client_secret": SENTINEL + "2"}, cas=1)
    errors.append(lost.value)
    emulator.fault(match=PATH, code="rate_limited", retry_after=1)
    with pytest.raises(RateLimited) as limited:
        vault.read(PATH)
    errors.append(limited.value)
    output = log_stream.getvalue()
    assert "vault_retry" in output and "vault_gave_up" in output
    assert SENTINEL not in output and emulator.admin_token not in output
    for error in errors:
        for text in (str(error), repr(error), str(error.__cause__)):
            assert SENTINEL not in text and emulator.admin_token not in text
