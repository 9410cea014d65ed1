"""The ScaiVault emulator over real HTTP: secrets, access, faults, webhooks, rotation, state."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.local.processes import cli_argv, free_port
from tests.fixtures.emulator import FAST_DELIVERY, Emulator, EmulatorProcess, WebhookSink

pytestmark = pytest.mark.integration

PATH = "integrations/salesforce/oauth"
SENTINEL = "sentinel-emulator-value-5b1f"


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    code: str = body["error"]["code"]
    return code


# --- secrets ---------------------------------------------------------------------------


def test_put_then_get_returns_the_spec_shape(emulator: Emulator) -> None:
    first = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"k": "v1"}})
    second = emulator.client.put(
        f"/v1/secrets/{PATH}", json={"data": {"k": "v2"}, "metadata": {"m": 1}}
    )
    assert (first.status_code, first.json()["version"]) == (201, 1)
    assert (second.status_code, second.json()["version"]) == (200, 2)
    assert set(second.json()) == {"path", "version", "created_at"}
    got = emulator.get_secret(PATH)
    assert set(got) == {
        "path", "version", "data", "secret_type", "metadata", "created_at", "created_by",
    }  # fmt: skip
    assert (got["version"], got["data"], got["metadata"]) == (2, {"k": "v2"}, {"m": 1})
    assert (got["secret_type"], got["created_by"]) == ("json", "admin")
    assert emulator.get_secret(PATH, version=1)["data"] == {"k": "v1"}


def test_max_versions_prunes_the_oldest(emulator: Emulator) -> None:
    for n in range(1, 5):
        emulator.put_secret(PATH, {"n": n}, options={"max_versions": 2}, metadata={"n": n})
    versions = emulator.versions(PATH)
    assert [v["version"] for v in versions] == [3, 4]
    assert set(versions[0]) == {"version", "created_at", "created_by", "metadata"}
    assert versions[1]["metadata"] == {"n": 4}
    pruned = emulator.client.get(f"/v1/secrets/{PATH}", params={"version": 1})
    assert (pruned.status_code, error_of(pruned)) == (404, "not_found")


def test_cas_refuses_a_stale_version(emulator: Emulator) -> None:
    assert emulator.put_secret(PATH, {"k": 1}, options={"cas": 0}) == 1
    assert emulator.put_secret(PATH, {"k": 2}, options={"cas": 1}) == 2
    stale = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {}, "options": {"cas": 1}})
    assert (stale.status_code, error_of(stale)) == (409, "version_conflict")
    exists = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {}, "options": {"cas": 0}})
    assert exists.status_code == 409
    assert emulator.get_secret(PATH)["version"] == 2


def test_list_by_prefix(emulator: Emulator) -> None:
    for path in ("a/one", "a/two/deep", "b/three"):
        emulator.put_secret(path, {"x": 1}, secret_type="password")
    listed = emulator.client.get("/v1/secrets", params={"prefix": "a/"}).json()["secrets"]
    assert [s["path"] for s in listed] == ["a/one", "a/two/deep"]
    assert set(listed[0]) == {"path", "version", "secret_type", "updated_at"}
    assert listed[0]["secret_type"] == "password"


def test_missing_secret_is_not_found(emulator: Emulator) -> None:
    response = emulator.client.get("/v1/secrets/no/such/secret")
    assert (response.status_code, error_of(response)) == (404, "not_found")


# --- access ----------------------------------------------------------------------------


def test_policies_and_bindings_are_enforced(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.put_secret("integrations/other/x", {"k": 2})
    token = emulator.token("sa:reader", paths=["integrations/salesforce/*"], permissions=["read"])
    with emulator.client_for(token) as reader:
        assert reader.get(f"/v1/secrets/{PATH}").json()["data"] == {"k": 1}
        denied = reader.put(f"/v1/secrets/{PATH}", json={"data": {"k": 3}})
        other = reader.get("/v1/secrets/integrations/other/x")
        admin_only = reader.post("/v1/policies", json={"name": "x", "rules": []})
        listed = reader.get("/v1/secrets").json()["secrets"]
    assert (denied.status_code, error_of(denied)) == (403, "access_denied")
    message = denied.json()["error"]["message"]
    assert PATH in message and "write" in message
    assert (other.status_code, error_of(other)) == (403, "access_denied")
    assert admin_only.status_code == 403
    assert listed == []  # read does not imply list
    assert emulator.get_secret(PATH)["version"] == 1


def test_double_star_and_single_star_globs(emulator: Emulator) -> None:
    emulator.put_secret("team/a/b/c", {"k": 1})
    emulator.put_secret("team/a/b", {"k": 1})
    deep = emulator.token("sa:deep", paths=["team/**"], permissions=["read", "list"])
    one = emulator.token("sa:one", paths=["team/*/b"], permissions=["read"])
    with emulator.client_for(deep) as d, emulator.client_for(one) as o:
        assert d.get("/v1/secrets/team/a/b/c").status_code == 200
        assert len(d.get("/v1/secrets", params={"prefix": "team/"}).json()["secrets"]) == 2
        assert o.get("/v1/secrets/team/a/b").status_code == 200
        assert o.get("/v1/secrets/team/a/b/c").status_code == 403


def test_missing_unknown_and_expired_tokens(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    bare = httpx.get(f"{emulator.url}/v1/secrets/{PATH}")
    unknown = httpx.get(f"{emulator.url}/v1/secrets/{PATH}", headers={"Authorization": "Bearer x"})
    token = emulator.token("sa:reader", ttl="1h", paths=[PATH])
    with emulator.client_for(token) as reader:
        assert reader.get(f"/v1/secrets/{PATH}").status_code == 200
        emulator.advance("59m")
        assert reader.get(f"/v1/secrets/{PATH}").status_code == 200
        emulator.advance("2m")
        expired = reader.get(f"/v1/secrets/{PATH}")
    assert (bare.status_code, error_of(bare)) == (401, "authentication_required")
    assert (unknown.status_code, error_of(unknown)) == (401, "authentication_required")
    assert (expired.status_code, error_of(expired)) == (401, "token_expired")


def test_control_endpoints_need_the_admin_token(emulator: Emulator) -> None:
    token = emulator.token("sa:anyone", paths=["**"], permissions=["*"])
    with emulator.client_for(token) as client:
        for method, path in [
            ("POST", "/v1/_emulator/faults"), ("POST", "/v1/_emulator/reset"),
            ("POST", "/v1/_emulator/tokens"), ("GET", "/v1/_emulator/deliveries"),
        ]:  # fmt: skip
            response = client.request(method, path, json={})
            assert (response.status_code, error_of(response)) == (403, "access_denied")


# --- audit -----------------------------------------------------------------------------


def test_audit_records_reads_and_writes_with_identity(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    token = emulator.token("sa:reader", paths=[PATH], permissions=["read"])
    with emulator.client_for(token) as reader:
        reader.get(f"/v1/secrets/{PATH}")
        reader.put(f"/v1/secrets/{PATH}", json={"data": {}})
        own_audit = reader.get("/v1/audit", params={"path": PATH})
    entries = emulator.audit(path=PATH)
    summary = [(e["identity"], e["action"], e["outcome"]) for e in entries]
    assert summary == [
        ("admin", "write", "ok"), ("sa:reader", "read", "ok"), ("sa:reader", "write", "denied"),
        ("sa:reader", "audit", "denied"),  # reading the trail needs the audit permission
    ]  # fmt: skip
    assert all(e["at"].endswith("Z") for e in entries)
    assert entries[1]["version"] == 1
    assert own_audit.status_code == 403


# --- faults ----------------------------------------------------------------------------

FAULT_STATUS = {
    "authentication_required": 401, "token_expired": 401, "access_denied": 403,
    "not_found": 404, "invalid_request": 400, "version_conflict": 409,
    "rate_limited": 429, "service_unavailable": 503,
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(FAULT_STATUS))
def test_each_fault_code_answers_in_the_spec_shape(emulator: Emulator, code: str) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match="integrations/salesforce/*", code=code, count=2, retry_after=3)
    answers = [emulator.client.get(f"/v1/secrets/{PATH}") for _ in range(3)]
    assert [r.status_code for r in answers] == [FAULT_STATUS[code]] * 2 + [200]
    assert error_of(answers[0]) == code
    if code in ("rate_limited", "service_unavailable"):
        assert answers[0].headers["Retry-After"] == "3"
    assert emulator.faults()[0]["hits"] == 2


def test_fault_filters_by_method_and_match(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match="integrations/**", code="service_unavailable", methods=["PUT"])
    assert emulator.client.get(f"/v1/secrets/{PATH}").status_code == 200
    assert emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {}}).status_code == 503
    assert emulator.client.put("/v1/secrets/elsewhere/x", json={"data": {}}).status_code == 201
    assert emulator.client.get("/v1/_emulator/faults").status_code == 200  # never faulted
    emulator.clear_faults()
    assert emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {}}).status_code == 200


def test_fault_matches_request_paths_and_latency_only_faults_pass(emulator: Emulator) -> None:
    emulator.fault(match="/v1/policies", code="rate_limited", count=1, retry_after=1)
    emulator.fault(match="**", latency=0.05, count=1)
    limited = emulator.client.post("/v1/policies", json={"name": "p", "rules": []})
    assert (limited.status_code, error_of(limited)) == (429, "rate_limited")
    assert emulator.client.get("/v1/secrets").status_code == 200  # the latency fault: slow only
    assert [f["hits"] for f in emulator.faults()] == [1, 1]


def test_fault_probability_hits_some_requests(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match=PATH, code="service_unavailable", probability=0.5)
    statuses = [emulator.client.get(f"/v1/secrets/{PATH}").status_code for _ in range(60)]
    assert {200, 503} == set(statuses)  # both outcomes with near certainty (1 - 2**-59)
    assert emulator.faults()[0]["hits"] == statuses.count(503)


def test_drop_response_performs_the_write_but_loses_the_answer(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match=PATH, code="drop_response", count=1, methods=["PUT"])
    with pytest.raises(httpx.TransportError):  # an incomplete answer or a reset, never a status
        emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"k": 2}, "options": {"cas": 1}})
    assert emulator.get_secret(PATH)["version"] == 2  # the write landed
    retry = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {}, "options": {"cas": 1}})
    assert retry.status_code == 409


def test_a_slow_write_lands_even_when_the_client_gave_up(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match=PATH, methods=["PUT"], latency=1.0, count=1)
    with pytest.raises(httpx.ReadTimeout):
        emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"k": 2}}, timeout=0.2)
    deadline = time.monotonic() + 10
    while emulator.get_secret(PATH)["version"] == 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.get_secret(PATH)["data"] == {"k": 2}


def test_drop_request_loses_the_request(emulator: Emulator) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.fault(match=PATH, code="drop_request", count=1)
    with pytest.raises(httpx.TransportError):  # an incomplete answer or a reset, never a status
        emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"k": 2}})
    assert emulator.get_secret(PATH)["version"] == 1


def test_unknown_fault_code_is_refused(emulator: Emulator) -> None:
    response = emulator.client.post("/v1/_emulator/faults", json={"code": "explode"})
    assert (response.status_code, error_of(response)) == (400, "invalid_request")


# --- subscriptions and delivery --------------------------------------------------------


def test_write_delivers_a_signed_secret_updated_event(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, paths=["integrations/**"],
                       events=["secret.updated"])  # fmt: skip
    emulator.put_secret("unrelated/path", {"k": 0})
    emulator.put_secret(PATH, {"k": 1})
    [request] = webhook_sink.wait(1)
    assert request["headers"]["Content-Type"] == "application/json"
    event = json.loads(request["body"])
    assert set(event) == {"id", "type", "created_at", "path", "data"}
    assert event["id"].startswith("evt_") and event["created_at"].endswith("Z")
    assert (event["type"], event["path"], event["data"]) == ("secret.updated", PATH, {"version": 1})
    [attempt] = emulator.wait_deliveries(lambda d: d["ok"], event_id=event["id"])
    assert (attempt["status"], attempt["attempt"], attempt["url"]) == (200, 1, webhook_sink.url)
    assert len(webhook_sink.received) == 1  # the unrelated path was not delivered


def test_wrong_secret_is_refused_by_the_spec_check(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    emulator.subscribe(webhook_sink.url, "whsec_wrong", events=["secret.updated"])
    emulator.put_secret(PATH, {"k": 1})
    [request] = webhook_sink.wait(1, valid=False)
    assert not request["valid"]
    emulator.wait_deliveries(lambda d: d["status"] == 401)


def test_non_2xx_is_retried_with_the_same_bytes(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    webhook_sink.answers = [(500, {}), (404, {})]
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["secret.updated"])
    emulator.put_secret(PATH, {"k": 1})
    received = webhook_sink.wait(3)
    assert [r["status"] for r in received] == [500, 404, 200]
    assert len({r["body"] for r in received}) == 1
    attempts = emulator.wait_deliveries(lambda d: d["ok"])
    history = emulator.deliveries(event_id=attempts[0]["event_id"])
    assert [(d["attempt"], d["status"]) for d in history] == [(1, 500), (2, 404), (3, 200)]
    assert emulator.deliveries(limit=1) == history[-1:]
    assert emulator.deliveries(subscription_id="sub_other") == []


def test_unreachable_receiver_is_retried_then_given_up(emulator: Emulator) -> None:
    emulator.configure(retry_schedule=[0.05, 0.05])
    nobody = f"http://127.0.0.1:{free_port()}/nothing"  # connection refused
    emulator.subscribe(nobody, "whsec_x", events=["secret.updated"])
    emulator.put_secret(PATH, {"k": 1})
    attempts = emulator.wait_deliveries(count=3)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["status"] is None and a["error"] for a in attempts)
    emulator.wait_idle()  # the delivery task ended: it gave up after the schedule ran out
    assert len(emulator.deliveries()) == 3


def test_retry_after_on_503_is_honoured(emulator: Emulator, webhook_sink: WebhookSink) -> None:
    # The schedule alone would wait 60 s; Retry-After: 0 makes the retry come at once.
    emulator.configure(retry_schedule=[60.0])
    webhook_sink.answers = [(503, {"Retry-After": "0"})]
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["secret.updated"])
    emulator.put_secret(PATH, {"k": 1})
    received = webhook_sink.wait(2, timeout=20)
    assert [r["status"] for r in received] == [503, 200]


def test_redeliver_sends_byte_identical_duplicates(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["secret.updated"])
    emulator.put_secret(PATH, {"k": 1})
    [first] = webhook_sink.wait(1)
    event_id = json.loads(first["body"])["id"]
    emulator.redeliver(event_id, times=3)
    emulator.redeliver(event_id, times=2, concurrent=True)
    received = webhook_sink.wait(6)
    assert len({r["body"] for r in received}) == 1
    assert len({r["headers"]["X-ScaiVault-Signature"] for r in received}) == 1
    redeliveries = emulator.wait_deliveries(lambda d: d["redelivery"], count=5)
    assert {d["event_id"] for d in redeliveries} == {event_id}
    missing = emulator.client.post("/v1/_emulator/deliveries/evt_nope/redeliver", json={})
    assert missing.status_code == 404


def test_delivery_does_not_block_the_api(emulator: Emulator) -> None:
    # A receiver that never answers (a listening socket nobody accepts from) must not slow writes.
    emulator.configure(delivery_timeout=30.0)
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(0)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/events"
        emulator.subscribe(url, "whsec_x", events=["secret.updated"])
        for n in range(5):
            response = emulator.client.put(f"/v1/secrets/{PATH}", json={"data": {"n": n}},
                                           timeout=5.0)  # fmt: skip
            assert response.status_code in (200, 201)
        assert emulator.client.get("/v1/_emulator/deliveries").json()["pending"] >= 1


# --- rotation --------------------------------------------------------------------------


def test_due_rotation_emits_one_rotation_due_per_period(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    emulator.put_secret(PATH, {"client_secret": SENTINEL})
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, paths=[PATH], events=["rotation.due"])
    policy_id = emulator.rotation_policy(interval="90d", grace_period="48h", paths=[PATH])
    emulator.advance("89d")
    emulator.wait_ticks()  # due rotations fire in a tick (and in advance): nothing is due yet
    assert emulator.pending() == 0 and emulator.deliveries(type="rotation.due") == []
    assert webhook_sink.received == []
    emulator.advance("1d")
    [request] = webhook_sink.wait(1)
    event = json.loads(request["body"])
    assert (event["type"], event["path"]) == ("rotation.due", PATH)
    assert event["data"] == {"version": 1, "policy_id": policy_id, "grace_period": "48h",
                             "trigger": "schedule"}  # fmt: skip
    emulator.advance("1h")  # a clock nudge and more ticks: still one event for this period
    emulator.wait_ticks()
    emulator.wait_idle()
    assert len(emulator.deliveries(type="rotation.due")) == 1
    emulator.advance("90d")
    webhook_sink.wait(2)
    assert emulator.get_secret(PATH)["version"] == 1  # auto_generate false: nothing written


def test_auto_generate_writes_a_new_version_and_emits_secret_rotated(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    metadata = {"owner": "team", "rotation_id": "r1", "finalize_after": "2026-01-01T00:00:00Z"}
    data = {"username": "app", "password": SENTINEL}
    emulator.put_secret("db/app", data, secret_type="password", metadata=metadata)
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["secret.rotated"])
    policy_id = emulator.rotation_policy(interval="30d", auto_generate=True, paths=["db/app"])
    emulator.advance("30d")
    [request] = webhook_sink.wait(1)
    event = json.loads(request["body"])
    assert (event["type"], event["data"]["version"], event["data"]["policy_id"]) == (
        "secret.rotated", 2, policy_id,
    )  # fmt: skip
    new = emulator.get_secret("db/app")
    assert new["version"] == 2 and new["data"]["username"] == "app"
    assert new["data"]["password"] != SENTINEL and len(new["data"]["password"]) >= 24
    assert new["metadata"] == {"owner": "team", "rotated_by": "scaivault",
                               "rotation_policy": policy_id, "previous_version": 1}  # fmt: skip
    assert SENTINEL not in request["body"].decode()


def test_rotate_endpoint_fires_now_and_needs_rotate_permission(
    emulator: Emulator, webhook_sink: WebhookSink
) -> None:
    emulator.put_secret(PATH, {"k": 1})
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["rotation.due"])
    policy_id = emulator.rotation_policy(grace_period="48h", paths=[PATH])
    reader = emulator.token("sa:reader", paths=[PATH], permissions=["read"])
    rotator = emulator.token("sa:rotator", paths=[PATH], permissions=["rotate"])
    with emulator.client_for(reader) as r, emulator.client_for(rotator) as o:
        denied = r.post(f"/v1/secrets/{PATH}/rotate")
        fired = o.post(f"/v1/secrets/{PATH}/rotate")
    assert (denied.status_code, error_of(denied)) == (403, "access_denied")
    assert "rotate" in denied.json()["error"]["message"]
    assert fired.status_code == 202
    event = json.loads(webhook_sink.wait(1)[0]["body"])
    assert event["id"] == fired.json()["event_id"]
    assert event["data"] == {"version": 1, "policy_id": policy_id, "grace_period": "48h",
                             "trigger": "manual"}  # fmt: skip


# --- state file ------------------------------------------------------------------------


def test_state_file_survives_restart_and_kill(
    emulator_factory: Callable[..., EmulatorProcess], tmp_path: Any
) -> None:
    state_file = tmp_path / "state" / "emulator.json"
    process = emulator_factory(state_file=state_file, admin_token="adm-state-test")
    with process.handle() as emu:
        emu.put_secret(PATH, {"k": 1}, options={"max_versions": 2})
        token = emu.token("sa:reader", ttl="2h", paths=[PATH])
        sub_id = emu.subscribe("http://127.0.0.1:9/x", "whsec_s", events=["rotation.due"])
        rot_id = emu.rotation_policy(paths=[PATH])
        emu.advance("1h")
    process.restart()
    with process.handle() as emu:
        emu.put_secret(PATH, {"k": 2})
        assert [v["version"] for v in emu.versions(PATH)] == [1, 2]
        subs = emu.client.get("/v1/subscriptions").json()["subscriptions"]
        rots = emu.client.get("/v1/rotation/policies").json()["policies"]
        assert [s["id"] for s in subs] == [sub_id] and "secret" not in subs[0]["delivery"]
        assert [r["id"] for r in rots] == [rot_id]
        with emu.client_for(token) as reader:
            assert reader.get(f"/v1/secrets/{PATH}").json()["data"] == {"k": 2}
    process.kill()  # no shutdown hook: what was written before must already be on disk
    process.start()
    with process.handle() as emu:
        emu.put_secret(PATH, {"k": 3})
        assert [v["version"] for v in emu.versions(PATH)] == [2, 3]  # max_versions kept too
        emu.advance("1h")  # the clock offset survived: 1h + 1h reaches the 2h expiry
        with emu.client_for(token) as reader:
            assert error_of(reader.get(f"/v1/secrets/{PATH}")) == "token_expired"
        emu.reset()  # a path written again after a reset must not be saved from stale cache
        emu.put_secret(PATH, {"k": "after-reset"})
    process.restart()
    with process.handle() as emu:
        assert emu.get_secret(PATH)["data"] == {"k": "after-reset"}
        assert emu.client.get("/v1/subscriptions").json()["subscriptions"] == []


def test_unreadable_state_file_stops_start_up_with_a_message(tmp_path: Any) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text('{"secrets": 5')
    argv = cli_argv("emulator", "--port", str(free_port()), "--admin-token", "a",
                    "--state-file", str(state_file))  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "not a readable emulator state" in done.stderr and "Traceback" not in done.stderr


# --- bad input -------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, Any]] = [
    ("PUT", f"/v1/secrets/{PATH}", b"{not json"),
    ("PUT", f"/v1/secrets/{PATH}", b"\xff\xfe\x00garbage"),
    ("PUT", f"/v1/secrets/{PATH}", b"[1, 2]"),
    ("PUT", f"/v1/secrets/{PATH}", b'"just a string"'),
    ("PUT", f"/v1/secrets/{PATH}", b'{"data": {"x": 1e400}}'),
    ("PUT", f"/v1/secrets/{PATH}", b'{"data": {}, "metadata": {"x": [-1e999]}}'),
    ("PUT", f"/v1/secrets/{PATH}", b"[" * 100_000),
    ("PUT", f"/v1/secrets/{PATH}", {"data": "not an object"}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "options": {"cas": "1"}}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "options": {"cas": True}}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "options": {"cas": -1}}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "options": {"max_versions": 0}}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "options": {"cas": 1.5}}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "metadata": [1]}),
    ("PUT", f"/v1/secrets/{PATH}", {"data": {}, "secret_type": 7}),
    ("PUT", "/v1/secrets/a//b", {"data": {}}),
    ("PUT", "/v1/secrets/a/%2E%2E/b", {"data": {}}),
    ("PUT", "/v1/secrets/a/versions", {"data": {}}),
    ("GET", f"/v1/secrets/{PATH}?version=abc", None),
    ("GET", f"/v1/secrets/{PATH}?version=0", None),
    ("GET", f"/v1/secrets/{PATH}?version=%C2%B2", None),
    ("POST", "/v1/_emulator/tokens", {"identity": "sa:x", "ttl": "999999999d"}),
    ("POST", "/v1/_emulator/clock", {"advance": "999999999d"}),
    ("POST", "/v1/_emulator/tokens", {"identity": "sa:x", "ttl": "soon"}),
    ("POST", "/v1/_emulator/tokens", {"identity": ""}),
    ("POST", "/v1/_emulator/clock", {"advance": "-1d"}),
    ("POST", "/v1/_emulator/faults", {"count": 0}),
    ("POST", "/v1/policies", {"name": "p",
                              "rules": [{"path_pattern": "x", "permissions": ["fly"]}]}),
    ("POST", "/v1/policies", {"name": "p"}),
    ("POST", "/v1/policies/pol_missing/bindings", {"identity_type": "t", "identity_id": "i"}),
    ("POST", "/v1/subscriptions", {
        "name": "s", "paths": ["x"], "events": ["e"],
        "delivery": {"type": "webhook", "url": "ftp://x", "secret": "s"}}),
    ("POST", "/v1/subscriptions", {
        "name": "s", "paths": [], "events": ["e"],
        "delivery": {"type": "email", "url": "http://x", "secret": "s"}}),
    ("POST", "/v1/rotation/policies", {"name": "r", "interval": "0s"}),
    ("POST", "/v1/rotation/policies", {"name": "r", "interval": "ninety days"}),
    ("POST", "/v1/rotation/policies/rot_missing/secrets", {"secret_path": "a/b"}),
    ("POST", "/v1/_emulator/deliveries/evt_x/redeliver", {"times": 0}),
    ("DELETE", f"/v1/secrets/{PATH}", None),
    ("GET", "/v2/anything", None),
    ("POST", f"/v1/secrets/{PATH}/rotate", None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_in_the_spec_shape(
    emulator: Emulator, method: str, path: str, body: Any
) -> None:
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    response = emulator.client.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert error_of(response) in {"invalid_request", "not_found", "method_not_allowed"}
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "r", "interval": "3651d"},
        {"name": "r", "interval": "90d", "grace_period": "2914000d"},
        {"name": "r", "interval": "90d", "grace_period": "999999999d999999999h"},
    ],
    ids=["interval", "grace", "grace-overflowing"],
)
def test_rotation_policy_durations_over_the_maximum_are_400(
    emulator: Emulator, body: dict[str, Any]
) -> None:
    response = emulator.client.post("/v1/rotation/policies", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response) == "invalid_request"
    assert "3650d (10 years)" in response.json()["error"]["message"]
    assert emulator.client.get("/v1/rotation/policies").json()["policies"] == []


def test_oversized_body_is_refused(emulator: Emulator) -> None:
    big = {"data": {"blob": "x" * (1024 * 1024 + 10)}}
    declared = emulator.client.put(f"/v1/secrets/{PATH}", json=big)
    assert (declared.status_code, error_of(declared)) == (413, "invalid_request")

    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65536

    streamed = emulator.client.put(f"/v1/secrets/{PATH}", content=chunks())  # no Content-Length
    assert (streamed.status_code, error_of(streamed)) == (413, "invalid_request")
    assert emulator.client.get(f"/v1/secrets/{PATH}").status_code == 404


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
PUT_BODIES = JSON | st.fixed_dictionaries(
    {"data": JSON, "options": st.dictionaries(st.sampled_from(["cas", "max_versions"]), JSON)}
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=PUT_BODIES)
def test_random_put_bodies_never_give_a_500(emulator: Emulator, body: Any) -> None:
    response = emulator.client.put("/v1/secrets/fuzz/target", json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error_of(response)


def test_secret_values_stay_out_of_the_emulator_log(
    emulator: Emulator, emulator_server: EmulatorProcess, webhook_sink: WebhookSink
) -> None:
    emulator.subscribe(webhook_sink.url, webhook_sink.secret, events=["*"])
    emulator.put_secret(PATH, {"client_secret": SENTINEL}, metadata={"description": "d"})
    emulator.get_secret(PATH)
    emulator.rotation_policy(interval="1d", auto_generate=True, paths=[PATH])
    emulator.advance("1d")
    webhook_sink.wait(2)
    assert SENTINEL not in emulator_server.child.log_tail(100_000)
    assert webhook_sink.secret not in emulator_server.child.log_tail(100_000)


FUZZ_ROUTES = [
    ("PUT", "/v1/secrets/fuzz/target"), ("POST", "/v1/policies"),
    ("POST", "/v1/subscriptions"), ("POST", "/v1/rotation/policies"),
    ("POST", "/v1/_emulator/tokens"), ("POST", "/v1/_emulator/faults"),
    ("POST", "/v1/_emulator/clock"), ("POST", "/v1/_emulator/config"),
]  # fmt: skip
FIELDS = st.sampled_from([
    "data", "options", "name", "rules", "identity", "ttl", "advance", "interval", "paths",
    "events", "delivery", "code", "count", "latency", "retry_schedule", "tick_interval",
])  # fmt: skip
VALUES = JSON | st.from_regex(r"\A[0-9]{1,12}[dhms]\Z") | st.sampled_from([1e308, -0.0, 2**70])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(FUZZ_ROUTES), body=st.dictionaries(FIELDS, VALUES, max_size=5))
def test_random_bodies_on_every_route_never_give_a_500(
    emulator: Emulator, route: tuple[str, str], body: dict[str, Any]
) -> None:
    method, path = route
    response = emulator.client.request(method, path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error_of(response)
    emulator.clear_faults()  # a random fault (or latency) must not leak into the next example
    emulator.configure(**FAST_DELIVERY)
    assert emulator.client.get("/v1/secrets").status_code == 200  # still healthy afterwards
