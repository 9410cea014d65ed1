"""The webhook receiver under attack, over real HTTP against a real Redis.

Extends ``test_receiver.py`` (which fuzzes the signature header, content type and body of
unsigned requests) with what an attacker on the network can try next:

- arbitrary extra and repeated headers around a valid or an invalid signature;
- a captured, validly signed event with its body changed (the signature kept);
- wrong secrets during a secret rollover: near-misses of both configured secrets, random ones,
  and signatures meant for another subscription;
- replay of a captured event once it is older than the accepted age, with its dedupe claim
  present and after the claim expired.

Every property: never a 5xx, and nothing reaches the queue unless the body is signed with a
configured secret.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.local.processes import RedisServer
from orchestrator.receiver.signing import sign
from orchestrator.state import keys
from tests.fixtures.receiver import LiveReceiver, event_body, start_receiver

pytestmark = pytest.mark.integration

NEW_SECRET = "whsec_rollover_new_5b0e5f8d2a"
OLD_SECRET = "whsec_rollover_old_91c4d7e3aa"
fuzz = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def rollover_receiver(redis_server: RedisServer) -> Iterator[LiveReceiver]:
    """A receiver in the middle of a rollover: both the new and the old secret accepted."""
    live = start_receiver(redis_server.url, scaivault_webhook_secret=f"{NEW_SECRET},{OLD_SECRET}")
    yield live
    live.stop()


def _queue_len(live: LiveReceiver) -> int:
    client = redis.Redis.from_url(str(live.app.state.receiver.settings.redis_url))
    try:
        return int(client.llen(keys.TASK_QUEUE))
    finally:
        client.close()


def _queued_ids(client: redis.Redis) -> list[str]:
    out = []
    for raw in client.lrange(keys.TASK_QUEUE, 0, -1):
        message = json.loads(raw)
        out.append(json.loads(base64.b64decode(message["body"]))[1]["event_id"])
    return out


_counter = iter(range(10**9))


def _fresh_body() -> bytes:
    return event_body(f"evt_sec_{time.monotonic_ns()}_{next(_counter)}")


header_names = st.sampled_from(
    ["X-ScaiVault-Signature", "x-scaivault-signature", "X-SCAIVAULT-SIGNATURE",
     "X-ScaiVault-Signature-256", "X-Signature", "Authorization", "Content-Type",
     "X-Forwarded-For", "Transfer-Encoding", "Expect", "Cookie"]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)  # fmt: skip
# HTTP forbids leading and trailing whitespace in a value (the client refuses to send it)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)


@fuzz
@given(
    extra=st.lists(st.tuples(header_names, header_values), max_size=6),
    signed_with=st.sampled_from([NEW_SECRET, OLD_SECRET, "whsec_attacker", None]),
)
def test_extra_and_repeated_headers_never_5xx_nor_enqueue_unsigned(
    rollover_receiver: LiveReceiver, extra: list[tuple[str, str]], signed_with: str | None
) -> None:
    body = _fresh_body()
    skip = {"content-length", "host", "transfer-encoding", "expect"}
    headers = [(n, v) for n, v in extra if n.lower() not in skip]
    headers.append(("Content-Type", "application/json"))
    if signed_with is not None:
        headers.append(("X-ScaiVault-Signature", sign(body, signed_with)))
    valid = signed_with in (NEW_SECRET, OLD_SECRET)
    before = _queue_len(rollover_receiver)
    response = rollover_receiver.http.post(
        rollover_receiver.events_url, content=body, headers=headers
    )
    after = _queue_len(rollover_receiver)
    assert response.status_code < 500
    if response.status_code == 202:
        assert valid, "an event without a valid signature was queued"
        assert after == before + 1
    else:
        assert after == before
    fudged = [n for n, _ in headers if n.lower() in ("x-scaivault-signature", "content-type")]
    if valid and len(fudged) == 2:  # nothing but the extras touched the headers that matter
        assert response.status_code == 202, response.text


@fuzz
@given(
    cut=st.integers(min_value=0, max_value=400),
    insert=st.binary(min_size=0, max_size=8),
    drop=st.integers(min_value=0, max_value=4),
)
def test_a_captured_event_with_its_body_changed_is_401(
    rollover_receiver: LiveReceiver, cut: int, insert: bytes, drop: int
) -> None:
    body = _fresh_body()
    signature = sign(body, NEW_SECRET)
    at = cut % (len(body) + 1)
    changed = body[:at] + insert + body[at + drop :]
    assume(changed != body)
    before = _queue_len(rollover_receiver)
    response = rollover_receiver.http.post(
        rollover_receiver.events_url,
        content=changed,
        headers={"content-type": "application/json", "x-scaivault-signature": signature},
    )
    assert response.status_code == 401
    assert _queue_len(rollover_receiver) == before


def _near_misses(secret: str) -> list[str]:
    core = secret.removeprefix("whsec_")
    return [
        secret + " ", " " + secret, secret.upper(), secret[:-1], secret + "0", secret[1:],
        core, "whsec_" + core[::-1], secret.replace("_", "-"),
        base64.b64encode(secret.encode()).decode(), secret + "," + secret,
    ]  # fmt: skip


@pytest.mark.parametrize("wrong", _near_misses(NEW_SECRET) + _near_misses(OLD_SECRET))
def test_near_misses_of_either_rollover_secret_are_401(
    rollover_receiver: LiveReceiver, wrong: str
) -> None:
    before = _queue_len(rollover_receiver)
    assert rollover_receiver.post(_fresh_body(), secret=wrong).status_code == 401
    assert _queue_len(rollover_receiver) == before


@fuzz
@given(wrong=st.text(min_size=1, max_size=64))
def test_random_secrets_during_rollover_are_401(
    rollover_receiver: LiveReceiver, wrong: str
) -> None:
    assume(wrong not in (NEW_SECRET, OLD_SECRET))
    before = _queue_len(rollover_receiver)
    response = rollover_receiver.post(_fresh_body(), secret=wrong)
    assert response.status_code == 401
    assert response.content == b'{"error":"unauthorized"}'
    assert _queue_len(rollover_receiver) == before


def test_signatures_for_two_subscriptions_one_ours_one_not(
    rollover_receiver: LiveReceiver,
) -> None:
    """A header may carry several signatures; ours must be one of them, in any position."""
    body = _fresh_body()
    theirs = sign(body, "whsec_other_subscription")
    for header in (f"{theirs},{sign(body, OLD_SECRET)}", f"{sign(body, NEW_SECRET)} {theirs}"):
        response = rollover_receiver.http.post(
            rollover_receiver.events_url,
            content=body,
            headers={"content-type": "application/json", "x-scaivault-signature": header},
        )
        assert response.status_code in (200, 202)
    only_theirs = {"content-type": "application/json", "x-scaivault-signature": theirs}
    response = rollover_receiver.http.post(
        rollover_receiver.events_url, content=_fresh_body(), headers=only_theirs
    )
    assert response.status_code == 401


def test_replay_after_the_dedupe_window_is_refused_by_age(
    redis_url: str, redis_client: redis.Redis, receiver_factory: Any
) -> None:
    """The claim outlives the accepted age, so a captured event replayed later is too old
    whether its claim is still there or has expired (simulated by deleting it)."""
    live = receiver_factory(redis_url, rotator_event_max_age="2s")
    body = event_body("evt_captured")
    assert live.post(body).status_code == 202
    assert live.post(body).status_code == 200  # within the window: a duplicate
    time.sleep(3.1)  # the event is now older than ROTATOR_EVENT_MAX_AGE

    too_old = live.post(body)
    assert (too_old.status_code, too_old.json()["reason"]) == (400, "too_old")
    assert redis_client.ttl(keys.event("evt_captured")) > 7 * 86400 - 60  # claim still held
    redis_client.delete(keys.event("evt_captured"))  # ... and now expired
    again = live.post(body)
    assert (again.status_code, again.json()["reason"]) == (400, "too_old")
    assert _queued_ids(redis_client) == ["evt_captured"]
