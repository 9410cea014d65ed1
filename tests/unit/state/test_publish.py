import base64
import json
from typing import Any

import pytest
from celery import Celery

from orchestrator.state import keys
from orchestrator.state.messages import RotateRequest, Task, task_message

KWARGS = RotateRequest(
    path="integrations/salesforce/oauth",
    event_id="evt_1",
    from_version=3,
    grace_period="48h",
    trigger="schedule",
    actor="scaivault",
    reason="rotation.due event",
).to_kwargs()
ROTATE_TASK = Task.ROTATE
# Fields that differ per message or per process, not in format.
VARYING_HEADERS = {"id", "root_id", "origin"}
VARYING_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


@pytest.fixture
def celery_message() -> dict[str, Any]:
    """What Celery + kombu put on the queue for the same send_task (memory transport: the
    same virtual-transport envelope the Redis transport JSON-encodes and LPUSHes)."""
    app = Celery("format_check", broker="memory://")
    app.conf.task_default_queue = keys.TASK_QUEUE
    app.send_task(ROTATE_TASK, kwargs=KWARGS, queue=keys.TASK_QUEUE)
    with app.connection_for_write() as conn:
        message: dict[str, Any] = conn.default_channel._get(keys.TASK_QUEUE)
    return message


def ours() -> tuple[str, dict[str, Any]]:
    task_id, payload = task_message(ROTATE_TASK, KWARGS)
    return task_id, json.loads(payload)


def test_envelope_matches_kombu_except_ids(celery_message: dict[str, Any]) -> None:
    _, mine = ours()
    strip = {"headers": VARYING_HEADERS, "properties": VARYING_PROPERTIES}
    for part, varying in strip.items():
        for name in varying:
            assert name in mine[part] and name in celery_message[part]
            mine[part].pop(name)
            celery_message[part].pop(name)
    assert mine == celery_message


def test_body_decodes_like_celerys(celery_message: dict[str, Any]) -> None:
    _, mine = ours()
    decoded = json.loads(base64.b64decode(mine["body"]))
    assert decoded == json.loads(base64.b64decode(celery_message["body"]))
    assert decoded[0] == [] and decoded[1] == KWARGS


def test_headers_match_as_task_v2() -> None:
    task_id, mine = ours()
    app = Celery("format_check", broker="memory://")
    expected = app.amqp.as_task_v2(
        task_id, ROTATE_TASK, args=(), kwargs=KWARGS, origin=mine["headers"]["origin"]
    )
    headers = dict(expected.headers)
    headers["ignore_result"] = None  # send_task leaves it unset; the worker reads it as False
    assert mine["headers"] == json.loads(json.dumps(headers))
    assert mine["properties"]["correlation_id"] == task_id
    assert mine["properties"]["delivery_info"] == {"exchange": "", "routing_key": "scaivault"}
    assert mine["properties"]["priority"] == 0


def test_ids_are_fresh_per_message_and_text_is_escaped() -> None:
    kwargs = dict(KWARGS, path='a/"quoted"%s\\path')
    first_id, first = task_message(ROTATE_TASK, kwargs)
    second_id, second = task_message(ROTATE_TASK, kwargs)
    assert first_id != second_id
    decoded = json.loads(first)
    assert json.loads(base64.b64decode(decoded["body"]))[1]["path"] == 'a/"quoted"%s\\path'
    assert decoded["headers"]["kwargsrepr"] == repr(kwargs)
    assert json.loads(second)["properties"]["delivery_tag"] != decoded["properties"]["delivery_tag"]


def test_rotate_kwargs_are_the_contract_and_only_ids() -> None:
    assert set(KWARGS) == {
        "path",
        "trigger",
        "event_id",
        "from_version",
        "grace_period",
        "actor",
        "reason",
    }
    assert all(isinstance(v, str | int) or v is None for v in KWARGS.values())
