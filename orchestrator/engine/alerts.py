"""Alerts: a JSON POST to ``ROTATOR_ALERT_WEBHOOK_URL`` when a rotation fails or needs a human.

The body carries facts on-call can act on (path, rotation id, state, reason, rotator, step) and
never a secret value. Sending never raises and is bounded by a short timeout: an alert endpoint
that is down must not stall or break the engine, so a failed send is logged as
``alert_failed`` (with the endpoint's host only; webhook URLs often embed a token).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.log import get_logger

SOURCE = "scaivault-rotator"

log = get_logger(__name__)


class Alerter:
    """Posts one JSON alert per call to ``url``; a no-op when ``url`` is None."""

    def __init__(
        self,
        url: str | None,
        timeout: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._transport = transport

    def send(
        self,
        *,
        path: str,
        rotation_id: str,
        state: str,
        reason: str,
        rotator: str | None = None,
        step: str | None = None,
    ) -> None:
        """POST the alert; log ``alert_sent`` or ``alert_failed``. Never raises."""
        if self.url is None:
            return
        body = payload(
            path=path,
            rotation_id=rotation_id,
            state=state,
            reason=reason,
            rotator=rotator,
            step=step,
        )
        fields = {"path": path, "rotation_id": rotation_id, "state": state, "host": self._host()}
        try:
            status = self._post(body)
        except Exception as exc:  # an alert must never break the engine
            log.warning("alert_failed", **fields, reason=type(exc).__name__)
            return
        if 200 <= status < 300:
            log.info("alert_sent", **fields, status=status)
        else:
            log.warning("alert_failed", **fields, status=status)

    def _post(self, body: dict[str, Any]) -> int:
        assert self.url is not None
        with httpx.Client(timeout=self.timeout, transport=self._transport) as client:
            return client.post(self.url, json=body).status_code

    def _host(self) -> str:
        return urlsplit(self.url or "").hostname or ""

    def __repr__(self) -> str:
        return f"Alerter(host={self._host()!r})"


def payload(
    *,
    path: str,
    rotation_id: str,
    state: str,
    reason: str,
    rotator: str | None = None,
    step: str | None = None,
) -> dict[str, Any]:
    """The alert's JSON body; ``text`` is a one-line summary for chat webhooks."""
    return {
        "source": SOURCE,
        "path": path,
        "rotation_id": rotation_id,
        "state": state,
        "reason": reason,
        "rotator": rotator,
        "step": step,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "text": f"[{SOURCE}] rotation {rotation_id} of {path} is {state}: {reason}",
    }
