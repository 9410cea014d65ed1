"""Fault injection for the chaos scenario: ScaiVault (emulator rules) and Salesforce (a pump).

ScaiVault faults are probabilistic emulator rules on every secret API request: ``rate_limited``,
``service_unavailable`` and added latency, together hitting about ``rate`` of the requests;
plus writes answered later than the client waits (``late_answer``: the first writes' answers
come after the engine's read timeout, though the writes land).
Salesforce's fake only knows counted faults, so a pump thread keeps arming a few at a time
(503 ``unavailable``, ``limit_exceeded``, ``expired_session``) and now and then expires every
session, as an org's session timeout would. The pump's choices come from its own seeded RNG.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import httpx

from tests.chaos.stack import ChaosStack

#: The ScaiVault fault rules (each drawn independently with the same probability).
VAULT_RULES: tuple[dict[str, Any], ...] = (
    {"code": "rate_limited", "retry_after": 0.2},
    {"code": "service_unavailable", "retry_after": 0.2},
    {"latency": 0.3},
)
#: Salesforce faults: (kind, "METHOD glob"). Token-endpoint faults are 503 only: a 403 or 401
#: there is a refused credential, which the rotator rightly treats as permanent.
SALESFORCE_FAULTS: tuple[tuple[str, str], ...] = (
    ("unavailable", "* /services/data/*"),
    ("unavailable", "POST /services/oauth2/token"),
    ("limit_exceeded", "* /services/data/*"),
    ("expired_session", "* /services/data/*"),
)


#: Writes whose answer comes this much after the request, past the chaos stack's read timeout.
LATE_ANSWER = {"latency": 2.0, "methods": ["PUT"]}
#: How many writes get a late answer (the first ones while faults are on).
LATE_WRITES = 6


def per_rule_probability(rate: float, rules: int = len(VAULT_RULES)) -> float:
    """The probability per rule so that ``rules`` independent draws hit ``rate`` of requests."""
    return 1.0 - (1.0 - rate) ** (1.0 / rules)


def arm_vault_faults(stack: ChaosStack, rate: float) -> None:
    """Add the ScaiVault fault rules, together hitting about ``rate`` of the API requests."""
    probability = per_rule_probability(rate)
    for rule in VAULT_RULES:
        stack.emulator("POST", "/v1/_emulator/faults", {**rule, "probability": probability})
    stack.emulator("POST", "/v1/_emulator/faults", {**LATE_ANSWER, "count": LATE_WRITES})


def vault_fault_hits(stack: ChaosStack) -> Counter[str]:
    """How many requests each kind of ScaiVault fault hit so far."""
    hits: Counter[str] = Counter()
    for fault in stack.emulator("GET", "/v1/_emulator/faults")["faults"]:
        late = fault.get("methods") == LATE_ANSWER["methods"] and not fault.get("code")
        hits["late_answer" if late else fault.get("code") or "latency"] += int(
            fault.get("hits") or 0
        )
    return hits


def clear_vault_faults(stack: ChaosStack) -> None:
    stack.emulator("DELETE", "/v1/_emulator/faults")


class SalesforcePump:
    """A thread arming Salesforce faults every ``interval`` seconds until stopped."""

    def __init__(self, stack: ChaosStack, rng: random.Random, interval: float = 0.4) -> None:
        self.stack = stack
        self.rng = rng
        self.interval = interval
        self.armed: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="salesforce-faults", daemon=True)

    def start(self) -> SalesforcePump:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop arming and clear every fault still armed."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.stack.box.salesforce("DELETE", "/_fake/faults")

    def _run(self) -> None:
        rounds = 0
        while not self._stop.wait(self.interval):
            rounds += 1
            kind, match = self.rng.choice(SALESFORCE_FAULTS)
            count = self.rng.randint(1, 2)
            try:
                if rounds % 15 == 0:
                    self.stack.box.salesforce("POST", "/_fake/expire-sessions")
                    self.armed["sessions_expired"] += 1
                body = {"match": match, "kind": kind, "count": count}
                self.stack.box.salesforce("POST", "/_fake/faults", body).raise_for_status()
                self.armed[kind] += count
            except httpx.HTTPError:
                continue
