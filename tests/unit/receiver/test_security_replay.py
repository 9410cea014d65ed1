"""The replay window is sound: a dedupe claim always outlives the age at which its event is
refused, for any accepted ``ROTATOR_EVENT_MAX_AGE`` and any accepted ``created_at``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import WebhookRejected
from orchestrator.receiver import envelope
from orchestrator.receiver.app import claim_ttl

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def _event(created_at: datetime) -> envelope.Envelope:
    return envelope.Envelope("evt_1", "rotation.due", created_at, "a/b", {"version": 1})


@given(
    max_age=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400)),
    offset=st.timedeltas(min_value=-envelope.FUTURE_SKEW, max_value=timedelta(days=400)),
)
def test_claim_outlives_every_event_the_receiver_would_accept(
    max_age: timedelta, offset: timedelta
) -> None:
    created_at = NOW - offset
    try:
        envelope.check_age(_event(created_at), now=NOW, max_age=max_age)
    except WebhookRejected:
        return  # refused at once: nothing claimed
    claim_expires = NOW + timedelta(seconds=claim_ttl(max_age))
    refused_from = created_at + max_age  # from then on the age check refuses a replay
    assert claim_expires > refused_from


@pytest.mark.parametrize("age", [timedelta(seconds=1), timedelta(days=7), timedelta(days=30)])
def test_an_event_just_past_the_window_is_too_old(age: timedelta) -> None:
    with pytest.raises(WebhookRejected) as caught:
        envelope.check_age(_event(NOW - age - timedelta(seconds=1)), now=NOW, max_age=age)
    assert (caught.value.status, caught.value.reason) == (400, "too_old")
