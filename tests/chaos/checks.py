"""The invariants the chaos scenario checks once the faults stopped and grace elapsed.

Each check returns a :class:`Check` with the problems it found (paths and reasons, never a
secret value); the harness prints them as the summary table and the test asserts on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.state import history, keys
from orchestrator.state.records import TERMINAL, RunRecord
from rotators.passwords import policy_problem
from rotators.random_password import RandomPasswordOptions
from rotators.versions import ROTATED_BY
from tests.chaos.consumers import Held, login_answer
from tests.chaos.probe import Sighting, token_answer
from tests.chaos.stack import ChaosStack

#: The random-password rule's options in the harness's routing file.
PASSWORD_OPTIONS = RandomPasswordOptions(length=24, field="password")


@dataclass
class Facts:
    """What the scenario set up and did, as the checks need it."""

    passwords: list[str] = field(default_factory=list)
    salesforce: list[str] = field(default_factory=list)
    postgres: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    consumers: dict[str, Held] = field(default_factory=dict)
    ghosts: list[str] = field(default_factory=list)
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)
    due_events: dict[str, str] = field(default_factory=dict)
    manual: list[str] = field(default_factory=list)
    sightings: dict[str, Sighting] = field(default_factory=dict)
    cli_outputs: list[str] = field(default_factory=list)
    broker_messages: set[str] = field(default_factory=set)

    @property
    def valid(self) -> list[str]:
        """Paths whose rotation is meant to succeed."""
        return self.passwords + self.salesforce + self.logins

    @property
    def logins(self) -> list[str]:
        """PostgreSQL and ACL paths: logins checked at their server, each with a consumer."""
        return self.postgres + self.acl


@dataclass
class Check:
    """One invariant: its name, how many items it covered, and what was wrong."""

    name: str
    covered: int
    problems: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


class World:
    """The end state of the stack, read once: versions, data and run records."""

    def __init__(self, stack: ChaosStack, facts: Facts) -> None:
        self.stack = stack
        self.facts = facts
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.data: dict[tuple[str, int], dict[str, Any]] = {}
        for path in facts.valid + facts.ghosts:
            listed = stack.emulator("GET", f"/v1/secrets/{path}/versions")["versions"]
            self.versions[path] = sorted(listed, key=lambda v: int(v["version"]))
            for version in self.versions[path]:
                number = int(version["version"])
                self.data[(path, number)] = stack.box.read(path, number)["data"]
        self.runs = list(_all_runs(stack))

    def current(self, path: str) -> int:
        return int(self.versions[path][-1]["version"])

    def runs_of(self, path: str) -> list[RunRecord]:
        return [r for r in self.runs if r.path == path]

    def secret_values(self) -> set[str]:
        """Every secret value any version ever held, and the stack's own secrets."""
        values = {
            str(d[k]) for d in self.data.values() for k in ("password", "client_secret") if d.get(k)
        }
        ends = self.stack.box.ends
        admin = self.stack.box.originals.get(ends.sf_admin_path, {})
        pg_admin = self.stack.box.originals.get(ends.pg_admin_path, {})
        values |= {ends.admin_token, ends.worker_token, ends.webhook_secret, ends.seal_key}
        values |= {str(admin.get("client_secret", "")), str(pg_admin.get("password", ""))}
        if self.stack.postgres is not None:
            values.add(self.stack.postgres.server.superuser.password)
        if self.stack.acl is not None:
            values.add(self.stack.acl.admin["password"])
        return {v for v in values if len(v) >= 12}


def _all_runs(stack: ChaosStack) -> Iterator[RunRecord]:
    for key in stack.client.scan_iter(keys.run("*"), count=500):
        record = stack.store.get(key.removeprefix(keys.run("")))
        if record is not None:
            yield record


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- the checks ----------------------------------------------------------------------------


def one_version_per_due_event(world: World) -> Check:
    """Each due event gave exactly one new version; every later version is a manual rotation's,
    and no path has more of those than manual rotations were fired at it (a task message
    delivered again, after a crash or a Redis restart, must not rotate a second time)."""
    check = Check("every due event produced exactly one new version", len(world.facts.due_events))
    stored = {(r.path, r.new_version): r for r in world.runs if r.new_version is not None}
    for path, event_id in world.facts.due_events.items():
        versions = world.versions[path]
        ours = [v for v in versions if (v.get("metadata") or {}).get("rotated_by") == ROTATED_BY]
        if path in world.facts.ghosts:
            if ours:
                check.problems.append(f"{path}: meant to fail, yet {len(ours)} version(s) written")
            continue
        from_v1 = [v for v in ours if v["metadata"].get("previous_version") == 1]
        if len(from_v1) != 1:
            check.problems.append(f"{path} ({event_id}): {len(from_v1)} new versions from v1")
        ids = [v["metadata"].get("rotation_id") for v in ours]
        if len(set(ids)) != len(ids):
            check.problems.append(f"{path}: one rotation wrote two versions ({ids})")
        for version in ours:
            number, meta = int(version["version"]), version["metadata"]
            run = stored.get((path, number))
            if meta.get("previous_version") != number - 1:
                check.problems.append(f"{path} v{number}: previous_version is not v{number - 1}")
            if run is None or run.rotation_id != meta.get("rotation_id"):
                check.problems.append(f"{path} v{number}: no run record stored this version")
            elif number > 2 and run.trigger != "manual":
                check.problems.append(f"{path} v{number}: extra version from a {run.trigger} run")
        manual = [v for v in ours if _trigger(stored, path, v) == "manual"]
        if len(manual) > world.facts.manual.count(path):
            fired = world.facts.manual.count(path)
            check.problems.append(f"{path}: {len(manual)} manual versions, {fired} fired")
        if len(versions) != 1 + len(ours):
            check.problems.append(f"{path}: {len(versions) - 1 - len(ours)} foreign version(s)")
    return check


def _trigger(stored: dict[tuple[str, int], RunRecord], path: str, version: Any) -> str | None:
    run = stored.get((path, int(version["version"])))
    return run.trigger if run is not None else None


def current_versions_work(world: World) -> Check:
    """Salesforce: the current pair gets a token. PostgreSQL, ACL: the current login logs in.
    Passwords: policy met, value changed."""
    facts = world.facts
    check = Check("every current version works at its target", len(facts.valid))
    with world.stack.salesforce_client() as client:
        for path in facts.salesforce:
            data = world.data[(path, world.current(path))]
            if token_answer(client, data) is not True:
                check.problems.append(f"{path}: current version {world.current(path)} refused")
    for path in facts.logins:
        data = world.data[(path, world.current(path))]
        if login_answer(world.stack.target_of(path), data) is not True:
            check.problems.append(f"{path}: current version {world.current(path)} cannot log in")
    for path in facts.passwords:
        data = world.data[(path, world.current(path))]
        problem = policy_problem(data.get("password"), PASSWORD_OPTIONS)
        if problem or data.get("password") == facts.originals[path]["password"]:
            check.problems.append(f"{path}: current password {problem or 'is the original'}")
    return check


def old_revoked_after_grace(world: World) -> Check:
    """Old credentials refused now; never refused (nor finalized) before ``finalize_after``,
    nor while a consumer was still connected with them."""
    facts = world.facts
    check = Check("every old credential revoked after its grace and once unused, not before", 0)
    with world.stack.salesforce_client() as client:
        for path in facts.salesforce:
            for version in world.versions[path][:-1]:
                check.covered += 1
                data = world.data[(path, int(version["version"]))]
                if token_answer(client, data) is not False:
                    check.problems.append(f"{path}: old v{version['version']} still accepted")
    for path in facts.logins:
        target = world.stack.target_of(path)
        for version in world.versions[path][:-1]:
            check.covered += 1
            data = world.data[(path, int(version["version"]))]
            if login_answer(target, data) is not False:
                check.problems.append(f"{path}: old v{version['version']} still logs in")
    check.problems += _revoked_while_in_use(world)
    for path, sighting in facts.sightings.items():
        due = _time(_meta(world, path, 2).get("finalize_after"))
        if sighting.first_refused is not None and due is not None and sighting.first_refused < due:
            early = (due - sighting.first_refused).total_seconds()
            check.problems.append(f"{path}: original pair refused {early:.1f}s before grace ended")
    for run in world.runs:
        if run.state == "done":
            check.problems += _finalized_early(world, run)
    seen = sum(1 for s in facts.sightings.values() if s.last_accepted is not None)
    waited = sum(1 for held in facts.consumers.values() if held.saw_wait)
    check.note = (
        f"old credential seen working during grace: {seen}/{len(facts.sightings)}; finalize "
        f"seen waiting for a connected consumer: {waited}/{len(facts.consumers)}"
    )
    for path, held in facts.consumers.items():
        if not held.saw_wait:
            check.problems.append(f"{path}: finalize was never seen waiting for its consumer")
    if facts.sightings and not seen:
        check.problems.append("the prober never saw an old pair working during grace")
    return check


def _revoked_while_in_use(world: World) -> list[str]:
    """PostgreSQL, ACL: the consumer's password still logged in when it left, and the run that
    moved off it finalized only after that."""
    problems = []
    for path, held in world.facts.consumers.items():
        if held.accepted_at_leave is False:
            problems.append(f"{path}: the old password was revoked while a consumer was connected")
        finalized = [
            _time(e["ts"])
            for e in history.read(world.stack.client, path, limit=history.MAX_ENTRIES)
            if e.get("event") == "rotation_finalized"
        ]
        early = [at for at in finalized if held.left_at and at and at < held.left_at]
        if early:
            problems.append(f"{path}: finalized while its consumer was still connected")
    return problems


def _meta(world: World, path: str, number: int) -> dict[str, Any]:
    for version in world.versions[path]:
        if int(version["version"]) == number:
            return dict(version.get("metadata") or {})
    return {}


def _finalized_early(world: World, run: RunRecord) -> list[str]:
    due = _time(run.finalize_after)
    entries = history.read(world.stack.client, run.path, limit=history.MAX_ENTRIES)
    done = [
        e
        for e in entries
        if e.get("event") == "rotation_finalized" and e.get("rotation_id") == run.rotation_id
    ]
    if due is None or not done:
        return [f"{run.path}: done run {run.rotation_id} lacks finalize_after or history"]
    at = _time(done[0]["ts"])
    if at is not None and at < due:
        return [f"{run.path}: {run.rotation_id} finalized {(due - at).total_seconds():.1f}s early"]
    return []


def nothing_left_running(world: World) -> Check:
    """Every run record is in a terminal state and the due-queue is empty."""
    check = Check("no rotation left in a non-terminal state", len(world.runs))
    for run in world.runs:
        if run.state not in TERMINAL:
            check.problems.append(f"{run.path}: {run.rotation_id} is {run.state}")
    pending = int(world.stack.client.zcard(keys.DUE))
    if pending:
        check.problems.append(f"{pending} entries left in the due-queue")
    return check


def permanent_failures_failed(world: World) -> Check:
    """Meant-to-fail paths end ``failed`` with a reason; no other path failed at all."""
    facts = world.facts
    check = Check("permanent failures are failed with a reason", len(facts.ghosts))
    for path in facts.ghosts:
        failed = [r for r in world.runs_of(path) if r.state == "failed" and r.last_error]
        if not failed:
            states = sorted({r.state for r in world.runs_of(path)})
            check.problems.append(f"{path}: meant to fail permanently, runs are {states}")
    for path in facts.valid:
        for run in world.runs_of(path):
            if run.state not in ("done", "skipped"):
                check.problems.append(f"{path}: {run.rotation_id} {run.state}: {run.last_error}")
    return check
