"""What a chaos run did and found: the parameters, the tally of faults, the checks, the table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.checks import Check, Facts


@dataclass(frozen=True)
class Params:
    """The scenario's knobs."""

    secrets: int = 200
    seed: int = 7
    kills: int = 12
    pool_kills: int = 6
    fault_rate: float = 0.2
    duration: float = 60.0
    grace: str = "10s"
    waves: int = 5
    manual_share: float = 0.1
    ghost_share: float = 0.02
    #: How many of the secrets are ``postgres-dual`` logins with a connected consumer.
    postgres: int = 8
    #: How many are ``redis-acl`` logins (two ACL users each) with a connected consumer.
    acl: int = 8
    settle_timeout: float = 300.0


@dataclass
class Tally:
    """What the harness did to the stack."""

    kills: list[str] = field(default_factory=list)
    pool_kills: int = 0
    #: Workers that exited by themselves: (name, exit status; negative for a signal).
    exits: list[tuple[str, int | None]] = field(default_factory=list)
    redis_restarts: int = 0
    #: At each Redis restart: (rotations a worker held a live lease on, unacknowledged messages).
    in_flight_at_restart: list[tuple[int, int]] = field(default_factory=list)
    due_events: int = 0
    redeliveries: int = 0
    manual: Counter[str] = field(default_factory=Counter)
    vault_faults: Counter[str] = field(default_factory=Counter)
    salesforce_faults: Counter[str] = field(default_factory=Counter)
    delivery_attempts: int = 0
    delivery_answers: Counter[str] = field(default_factory=Counter)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    """The outcome: parameters, what was done, and each check."""

    params: Params
    facts: Facts
    tally: Tally
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def summary(report: Report) -> str:
    """The summary table (what was done, then one row per check)."""
    p, t, f = report.params, report.tally, report.facts
    vault = ", ".join(f"{k} {v}" for k, v in sorted(t.vault_faults.items()))
    sales = ", ".join(f"{k} {v}" for k, v in sorted(t.salesforce_faults.items()))
    manual = ", ".join(f"{k} {v}" for k, v in sorted(t.manual.items()))
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(t.delivery_answers.items()))
    codes = Counter(code for _, code in t.exits)
    exits = ", ".join(f"exit {code}: {n}" for code, n in sorted(codes.items(), key=str)) or "-"
    flight = "; ".join(
        f"{runs} leased runs, {messages} unacked task messages"
        for runs, messages in t.in_flight_at_restart
    )
    lines = [
        f"chaos scenario: seed {p.seed}, {p.secrets} secrets ({len(f.passwords)} random-password, "
        f"{len(f.salesforce)} salesforce-oauth, {len(f.postgres)} postgres-dual, "
        f"{len(f.acl)} redis-acl, {len(f.ghosts)} meant to fail), "
        f"{p.duration:.0f}s of faults, grace {p.grace}",
        "",
        "| fault injected | count |",
        "|---|---|",
        f"| worker processes SIGKILLed (whole process group) and replaced | {len(t.kills)} |",
        f"| worker pool processes SIGKILLed (Celery forks a new one) | {t.pool_kills} |",
        f"| workers that exited by themselves (exit codes) and were restarted | {len(t.exits)} "
        f"({exits}) |",
        f"| Redis restarts (AOF), each with rotations in flight ({flight or '-'}) | "
        f"{t.redis_restarts} |",
        f"| signed rotation.due events | {t.due_events} |",
        f"| extra deliveries of those events (redeliveries) | {t.redeliveries} |",
        f"| rotation.due delivery attempts (receiver answers: {answers}) | {t.delivery_attempts} |",
        f"| manual rotations fired at the same paths | {len(f.manual)} ({manual or '-'}) |",
        f"| ScaiVault API requests faulted (p={p.fault_rate:.0%} while faults were on) | "
        f"{sum(t.vault_faults.values())} "
        f"({vault}) |",
        f"| Salesforce faults armed | {sum(t.salesforce_faults.values())} ({sales}) |",
        "",
        "| check | covered | result |",
        "|---|---|---|",
    ]
    for check in report.checks:
        result = "PASS" if check.ok else f"FAIL ({len(check.problems)})"
        lines.append(f"| {check.name} | {check.covered} | {result} |")
    notes = [f"- {c.name}: {c.note}" for c in report.checks if c.note]
    problems = [f"  ! {c.name}: {x}" for c in report.checks for x in c.problems[:20]]
    return "\n".join([*lines, "", *notes, *problems])
