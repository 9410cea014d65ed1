"""A wave of rotations: every routed secret under a prefix, published at once (``rotate --prefix``)
and counted by what its runs do (``status --prefix``, and ``status``'s per-target summary).

The CLI does not pace a wave: the workers' target budgets do. Every read here is one pipelined
round trip per batch of paths or runs, never one per path, so a wave of 10,000 is watched with a
handful of round trips a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.state import keys
from orchestrator.state.records import ACTIVE, iso_ms

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall

#: The wave's columns, in the order on-call reads them.
COLUMNS = ("queued", "running", "waiting for a slot", "stored", "failed")
#: The columns a run does not leave.
ENDED = frozenset({"stored", "failed"})
#: Run states counted as stored (the new version is in ScaiVault) and as failed (it will not be).
STORED = frozenset({"grace", "finalizing", "done"})
FAILED = frozenset({"failed", "needs_attention", "cancelled", "rolled_back", "skipped"})
#: States ``status``'s summary looks for the oldest in (a run in grace is waiting, not stuck).
IN_PROGRESS = ACTIVE - {"grace"}
#: Run fields a tally reads.
_FIELDS = ("path", "state", "slot_wait", "last_error", "updated_ms", "created_at", "target")
#: Commands per pipeline when reading thousands of keys.
_BATCH = 1000


@dataclass(frozen=True)
class Plan:
    """What a wave would rotate: ``ready`` paths, and those it leaves out (no rule; a rotation
    holds the path, as ``(path, rotation id, state)``)."""

    ready: list[str]
    unrouted: list[str]
    busy: list[tuple[str, str, str]]


@dataclass(frozen=True)
class Run:
    """The fields of one run a tally needs (``None`` state: published, no run record yet;
    ``target``: the one the worker resolved, ``None`` before a worker claimed the run)."""

    rotation_id: str
    path: str
    state: str | None
    slot_wait: str | None = None
    last_error: str | None = None
    updated_ms: int | None = None
    target: str | None = None

    @property
    def column(self) -> str:
        """Which of :data:`COLUMNS` the run counts in."""
        if self.state in STORED:
            return "stored"
        if self.state in FAILED:
            return "failed"
        if self.slot_wait:
            return "waiting for a slot"
        if self.state is None or self.state == "queued":
            return "queued"
        return "running"


@dataclass
class Tally:
    """A wave's runs by column; ``failures`` are the runs that will not store a version."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    failures: list[Run] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.counts["stored"] + self.counts["failed"]

    def add(self, run: Run) -> None:
        self.counts[run.column] += 1
        if run.column == "failed":
            self.failures.append(run)

    def line(self) -> str:
        """``3 queued, 16 running, 0 waiting for a slot, 80 stored, 1 failed``."""
        return ", ".join(f"{self.counts[name]} {name}" for name in COLUMNS)

    def as_dict(self) -> dict[str, Any]:
        failures = [
            {"path": r.path, "rotation_id": r.rotation_id, "state": r.state, "error": r.last_error}
            for r in self.failures
        ]
        return {"total": self.total, **self.counts, "failures": failures}


def plan(oc: OnCall, prefix: str) -> Plan:
    """The paths under ``prefix`` (one ScaiVault list) split into ready, unrouted and busy
    (the active runs read in pipelined batches)."""
    routed: list[str] = []
    unrouted: list[str] = []
    for path in sorted(oc.vault.list(prefix)):
        (routed if oc.routing.match(path) is not None else unrouted).append(path)
    holders = _strings(oc, [keys.active(path) for path in routed])
    held = {path: rid for path, rid in zip(routed, holders, strict=True) if rid}
    states = {run.rotation_id: run for run in read_runs(oc, list(held.values()))}
    busy = []
    for path, rid in held.items():
        run = states.get(rid)
        if run is not None and run.state in ACTIVE:
            busy.append((path, rid, run.state))
    taken = {path for path, _, _ in busy}
    return Plan([p for p in routed if p not in taken], unrouted, busy)


def read_runs(oc: OnCall, rotation_ids: list[str]) -> list[Run]:
    """The runs of ``rotation_ids`` (state ``None`` where no record exists yet), in order."""
    out: list[Run] = []
    for start in range(0, len(rotation_ids), _BATCH):
        chunk = rotation_ids[start : start + _BATCH]
        pipe = oc.redis.pipeline(transaction=False)
        for rid in chunk:
            pipe.hmget(keys.run(rid), list(_FIELDS))
        for rid, values in zip(chunk, pipe.execute(), strict=True):
            out.append(_run(rid, [_text(v) for v in values]))
    return out


def latest_under(oc: OnCall, prefix: str) -> list[str]:
    """The latest rotation id of every path under ``prefix`` that has one (Redis only)."""
    pattern = keys.last(_glob_escape(prefix)) + "*"
    names = [_text(k) or "" for k in oc.redis.scan_iter(match=pattern, count=1000)]
    return [rid for rid in _strings(oc, sorted(names)) if rid]


def tally(runs: Iterable[Run]) -> Tally:
    """Count ``runs`` by column."""
    counted = Tally()
    for run in runs:
        counted.add(run)
    return counted


def by_target(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target (each row's, see :func:`with_targets`): how many of ``rows`` (``status``
    rows) are in each state, and the one in progress the longest (by last update; grace is not
    in progress)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["target"] or "(no rule)", []).append(row)
    summary = []
    for target, members in sorted(groups.items()):
        states = Counter(str(row["state"]) for row in members)
        active = [r for r in members if r["state"] in IN_PROGRESS and r.get("updated_at")]
        oldest = min(active, key=lambda r: str(r["updated_at"]), default=None)
        summary.append({
            "target": target,
            "states": dict(sorted(states.items())),
            "oldest": None if oldest is None else {
                "path": oldest["path"], "state": oldest["state"], "since": oldest["updated_at"]
            },
        })  # fmt: skip
    return summary


def summary_rows(oc: OnCall, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``status``'s per-target summary counts: every active run (all of them, found by
    their path's ``active`` key, however many a wave started; ``rows`` stops at 200), plus the
    ended ones among ``rows`` (failed, left valid)."""
    names = [_text(k) or "" for k in oc.redis.scan_iter(match=keys.active("*"), count=1000)]
    ids = [rid for rid in _strings(oc, names) if rid]
    found = [run for run in read_runs(oc, ids) if run.state in ACTIVE]
    out = []
    for run in found:
        updated = iso_ms(str(run.updated_ms)) if run.updated_ms else None
        out.append({"path": run.path, "state": run.state, "target": run.target,
                    "updated_at": updated})  # fmt: skip
    return with_targets(oc, out) + [row for row in rows if row["state"] not in ACTIVE]


def with_targets(oc: OnCall, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each one's ``target``: the run's own (the worker resolved it with the
    rotator, e.g. a database's ``host:port``), else the CLI's guess (:func:`target_of`)."""
    guessed: dict[str, str | None] = {}
    for row in rows:
        if not row.get("target"):
            path = row["path"]
            if path not in guessed:
                guessed[path] = target_of(oc, path)
            row["target"] = guessed[path]
    return rows


def target_of(oc: OnCall, path: str) -> str | None:
    """The target (of the CLI's routing file) ``path`` rotates against, if a rule covers it:
    a rule's ``target``, else the rule itself (the CLI loads no plugin, so a target the rotator
    derives from its options is known only from a run a worker claimed)."""
    try:
        rule = oc.routing.match(path)
    except Exception:  # no routing file here: the summary just has no targets
        return None
    return rule.target.target if rule is not None else None


def _run(rotation_id: str, values: list[str | None]) -> Run:
    path, state, slot_wait, last_error, updated_ms, _created, target = values
    return Run(
        rotation_id, path or "", state or None, slot_wait or None, last_error or None,
        int(updated_ms) if updated_ms else None, target or None,
    )  # fmt: skip


def _strings(oc: OnCall, names: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(names), _BATCH):
        values = oc.redis.mget(names[start : start + _BATCH]) if names[start:] else []
        out += [_text(v) for v in values]
    return out


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def render(counted: Tally) -> str:
    """A wave's counts and its first failures, for people."""
    lines = [f"{counted.total} rotation(s): {counted.line()}"]
    lines += [
        f"  failed: {r.path}: {r.state}: {r.last_error or '-'}" for r in counted.failures[:20]
    ]
    if len(counted.failures) > 20:
        lines.append(f"  ... and {len(counted.failures) - 20} more (--json lists them all)")
    return "\n".join(lines)


def render_targets(summary: list[dict[str, Any]]) -> str:
    """``status``'s per-target summary: states counted, and the oldest active run."""
    lines = ["", "by target:"]
    for item in summary:
        states = ", ".join(f"{n} {state}" for state, n in item["states"].items())
        oldest = item["oldest"]
        since = (
            f"; oldest {oldest['path']} ({oldest['state']} since {oldest['since']})"
            if oldest
            else ""
        )
        lines.append(f"  {item['target']}: {states}{since}")
    return "\n".join(lines)
