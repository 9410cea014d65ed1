"""One routing rule as validated: its glob, rotator, options, finalize wait and target budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel

from orchestrator.routing.matching import glob_matches
from rotators.contract import Rotator

#: Every key a rule may have (then: how finalize waits for the old credential; the target
#: and its concurrency budget).
RULE_KEYS = (
    frozenset({"match", "rotator", "grace_period", "options"})
    | frozenset({"wait_until_unused", "finalize_wait_max", "when_still_used", "finalize_recheck"})
    | frozenset({"target", "max_concurrent"})
)
#: The largest ``max_concurrent`` a rule may set.
MAX_CONCURRENT_LIMIT = 10_000
#: What finalize does once ``finalize_wait_max`` has passed and the old credential is in use.
WHEN_STILL_USED = ("needs_attention", "finalize")


@dataclass(frozen=True)
class UnusedWait:
    """How finalize waits for the old credential's consumers to move off it (one rule's).

    ``enabled`` None means "when the rotator can tell" (:attr:`Rotator.tells_usage`). Finalize
    is re-checked after ``recheck``, doubling up to :data:`RECHECK_CAP` (or ``recheck`` when
    larger), until the old credential is unused or ``max_wait`` has passed; then ``then`` says
    whether it finalizes anyway or holds the run as ``needs_attention``.
    """

    enabled: bool | None = None
    max_wait: timedelta = timedelta(hours=24)
    then: str = "needs_attention"
    recheck: timedelta = timedelta(minutes=1)

    def applies_to(self, rotator: Rotator) -> bool:
        """Whether finalize asks ``rotator`` who still uses the old credential."""
        return rotator.tells_usage and self.enabled is not False


@dataclass(frozen=True)
class Budget:
    """The target a rule rotates against and how many rotations may work on it at once
    (``limit`` None: unlimited). Rules naming the same ``target`` share its budget."""

    target: str
    limit: int | None = None

    def capped(self, cap: int | None) -> Budget:
        """This budget lowered to ``cap`` (a batch's own ``--concurrency``; None: unchanged).
        A cap never raises the budget; the slots stay the target's, shared with every run."""
        if cap is None or (self.limit is not None and self.limit <= cap):
            return self
        return Budget(self.target, cap)

    def describe(self) -> str:
        """``db.internal:5432 (at most 16 at once)`` or ``... (no limit)``."""
        limit = "no limit" if self.limit is None else f"at most {self.limit} at once"
        return f"{self.target} ({limit})"


def rule_target(match: str) -> str:
    """The target name of a rule whose rotator names none: the rule itself."""
    return f"rule:{match}"


#: The longest re-check interval of a waiting finalize (unless ``finalize_recheck`` is longer).
RECHECK_CAP = timedelta(minutes=15)


@dataclass(frozen=True)
class Rule:
    """One validated rule: a path glob, the rotator's name, its grace period and options, and
    how its finalize waits for the old credential to be unused."""

    match: str
    rotator: str
    grace_period: timedelta | None
    options: BaseModel
    unused: UnusedWait = field(default_factory=UnusedWait)
    #: The rule's position in its file, from 1 (0: not read from a file).
    number: int = field(default=0, compare=False)
    #: Its target and concurrency budget (None: the rule is its own target, no limit).
    budget: Budget | None = None
    _segments: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._segments:
            object.__setattr__(self, "_segments", tuple(self.match.split("/")))

    @property
    def target(self) -> Budget:
        """The rule's target and budget (the rule itself, unlimited, when none was set)."""
        return self.budget or Budget(rule_target(self.match))

    def matches(self, path: str) -> bool:
        """True when ``path`` (segments separated by ``/``) matches this rule's glob."""
        return glob_matches(self._segments, tuple(path.strip("/").split("/")))
