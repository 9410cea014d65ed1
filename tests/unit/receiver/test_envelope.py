import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import WebhookRejected
from orchestrator.receiver.envelope import Envelope, parse

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def envelope(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": "evt_1",
        "type": "rotation.due",
        "created_at": "2026-11-27T08:00:00Z",
        "path": "integrations/salesforce/oauth",
        "data": {"version": 3, "policy_id": "rot_xyz", "grace_period": "48h"},
    }
    value.update(changes)
    return value


def run(body: bytes | dict[str, Any]) -> Envelope:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse(raw, now=NOW, max_age=WEEK)


def rejected(body: bytes | dict[str, Any]) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        run(body)
    return info.value


def test_the_specs_envelope_parses() -> None:
    event = run(envelope())
    assert (event.id, event.type, event.path) == ("evt_1", "rotation.due", envelope()["path"])
    assert (event.version, event.grace_period, event.trigger) == (3, "48h", "schedule")
    assert event.created_at == datetime(2026, 11, 27, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"id": "a", "id": "b"}', "invalid_json"),
        (b'{"n": NaN}', "invalid_json"),
        (b'{"n": -Infinity}', "invalid_json"),
        (b'{"n": 1e999}', "invalid_json"),
        (b'{"n": ' + b"9" * 5000 + b"}", "invalid_json"),
        (b'{"n": 1234567890123456789}', "invalid_json"),
        (b"", "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
        (b'{"a": 1} trailing', "invalid_json"),
    ],
    ids=["utf8", "deep", "dupkeys", "nan", "inf", "huge-float", "huge-int", "long-int", "empty",
         "bom", "trailing"],
)  # fmt: skip
def test_not_acceptable_json_is_400(body: bytes, reason: str) -> None:
    error = rejected(body)
    assert (error.status, error.reason) == (400, reason)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([envelope()], "body"),
        ("a string", "body"),
        (42, "body"),
        (None, "body"),
        (envelope(id=None), "id"),
        (envelope(id="evt 1"), "id"),
        (envelope(id="x" * 129), "id"),
        (envelope(type=7), "type"),
        (envelope(created_at="yesterday"), "created_at"),
        (envelope(created_at="2026-11-27T08:00:00"), "created_at"),
        (envelope(created_at=1700000000), "created_at"),
        (envelope(path="/etc/passwd"), "path"),
        (envelope(path="a/../b"), "path"),
        (envelope(path="a//b"), "path"),
        (envelope(path="a" * 513), "path"),
        (envelope(data=[]), "data"),
        (envelope(data={"grace_period": "48h"}), "data.version"),
        (envelope(data={"version": "3"}), "data.version"),
        (envelope(data={"version": True}), "data.version"),
        (envelope(data={"version": -1}), "data.version"),
        (envelope(data={"version": 3, "grace_period": "two days"}), "data.grace_period"),
        (envelope(data={"version": 3, "grace_period": 48}), "data.grace_period"),
        (envelope(data={"version": 3, "trigger": "attacker"}), "data.trigger"),
    ],
)
def test_wrong_shape_is_422_naming_the_field(body: Any, field: str) -> None:
    raw = json.dumps(body).encode()
    error = rejected(raw)
    assert (error.status, error.field) == (422, field)


def test_age_window() -> None:
    assert run(envelope(created_at="2026-11-20T09:00:00Z")).id == "evt_1"
    assert rejected(envelope(created_at="2026-11-20T08:59:59Z")).reason == "too_old"
    assert rejected(envelope(created_at="2026-11-27T10:00:01Z")).reason == "from_future"
    assert rejected(envelope(created_at="0001-01-01T00:00:00+01:00")).status == 400


def test_unknown_types_need_only_the_common_fields() -> None:
    event = run({"id": "evt_2", "type": "secret.deleted", "created_at": "2026-11-27T08:00:00Z"})
    assert (event.type, event.path) == ("secret.deleted", "")


def test_recorded_types_take_an_optional_version() -> None:
    event = run(envelope(type="secret.updated", data={}))
    assert event.version is None


@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_are_rejected_with_a_4xx(body: bytes) -> None:
    try:
        run(body)
    except WebhookRejected as exc:
        assert exc.status in {400, 422}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values | st.from_regex(r"evt_[a-z0-9]{1,8}", fullmatch=True),
            "type": json_values | st.sampled_from(["rotation.due", "secret.updated", "x.y"]),
            "created_at": json_values | st.just("2026-11-27T08:00:00Z"),
            "path": json_values | st.just("a/b"),
            "data": json_values | st.fixed_dictionaries({"version": json_values}),
        },
    )
)
def test_any_json_object_parses_or_is_rejected_with_a_4xx(value: dict[str, Any]) -> None:
    try:
        event = run(json.dumps(value).encode())
    except WebhookRejected as exc:
        assert exc.status in {400, 422}
    else:
        assert event.id == value["id"]
