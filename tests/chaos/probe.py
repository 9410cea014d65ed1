"""Watches old credentials at their targets while the scenario runs.

For every Salesforce, PostgreSQL or ACL secret whose rotation has stored a new version, the
prober asks the target whether the *original* credential is still accepted (the fake
Salesforce's token endpoint; a PostgreSQL or Redis login), and records the last time it was and
the first time it was refused. A refusal seen before the run's ``finalize_after`` proves an
early revocation; acceptance seen during grace shows the old credential kept working. Answers
other than accepted or refused (an injected 503, a connection error) say nothing and are ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.chaos.consumers import login_answer
from tests.chaos.stack import ChaosStack

#: Run states in which the new version is stored and the old pair may be revoked soon.
STORED_STATES = frozenset({"grace", "finalizing", "done", "needs_attention"})


@dataclass
class Sighting:
    """What the prober saw of one path's original pair."""

    last_accepted: datetime | None = None
    first_refused: datetime | None = None
    probes: int = 0


def token_answer(client: httpx.Client, data: dict[str, Any]) -> bool | None:
    """True if the token endpoint accepts the pair, False if it refuses it, None if unknown."""
    form = {
        "grant_type": "client_credentials",
        "client_id": str(data.get("client_id", "")),
        "client_secret": str(data.get("client_secret", "")),
    }
    try:
        response = client.post("/services/oauth2/token", data=form)
    except httpx.HTTPError:
        return None
    if response.status_code == 200:
        return True
    if response.status_code == 400 and "invalid_client" in response.text:
        return False
    return None


class OldCredentialProber:
    """A thread probing original Salesforce pairs and logins (``logins``: PostgreSQL or ACL
    secrets, :meth:`ChaosStack.target_of`) once their rotation stored a new version."""

    def __init__(
        self,
        stack: ChaosStack,
        originals: dict[str, dict[str, Any]],
        logins: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.stack = stack
        self.originals = {**originals, **(logins or {})}
        self.logins = set(logins or {})
        self.seen: dict[str, Sighting] = {path: Sighting() for path in self.originals}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="old-credential-probe", daemon=True)

    def start(self) -> OldCredentialProber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with self.stack.salesforce_client() as client:
            while not self._stop.wait(0.2):
                for path in self._candidates():
                    self._probe(client, path)

    def _candidates(self) -> list[str]:
        out = []
        for path, sighting in self.seen.items():
            if sighting.first_refused is not None:
                continue
            try:
                record = self.stack.store.last(path)
            except Exception:  # Redis restarting: try again next round
                return out
            if record is not None and record.state in STORED_STATES:
                out.append(path)
        return out

    def _probe(self, client: httpx.Client, path: str) -> None:
        data = self.originals[path]
        if path in self.logins:
            answer = login_answer(self.stack.target_of(path), data)
        else:
            answer = token_answer(client, data)
        now = datetime.now(UTC)
        sighting = self.seen[path]
        sighting.probes += 1
        if answer is True:
            sighting.last_accepted = now
        elif answer is False:
            sighting.first_refused = now
