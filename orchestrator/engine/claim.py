"""How a rotate request becomes a run (docs/architecture.md#the-protocol, step 1): start one,
merge into one, or decide.

One active rotation per path. A scheduled rotation's id derives from (path, version it rotates
from), so every delivery of one ``rotation.due`` names one run; a manual one's from its ledger
entry (every publish of it names one run) or, without one, from its task. In
the usual case the run is created at once, with this task's lease; otherwise the request merges
into the run already there (the same id, or a queued run of the path), or is recorded as a
decision that stored nothing (skipped: no rule, stale version, path busy; failed: the secret
cannot be read). Such records expire with the receiver's dedupe window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from orchestrator.duration import format_duration, parse_duration
from orchestrator.engine.driver import Read
from orchestrator.engine.failures import Failures
from orchestrator.engine.ids import manual_id, scheduled_id
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import AccessDenied, IllegalTransition, NotFound, PathBusy, reason_of
from orchestrator.routing import Rule, unrouted_reason
from orchestrator.state.messages import RotateRequest
from orchestrator.state.pending import is_manual_event
from orchestrator.state.records import LEASED, RunRecord, RunState
from rotators.contract import SecretVersion
from rotators.errors import PermanentError

#: Seconds added to the time since a read when judging whether another run changed the secret
#: after it (covers the round trip of the create that reports that run's last change).
_READ_MARGIN = 1.0

#: End states without a new version: a later due event for the same version starts over.
_RESTARTABLE = frozenset({RunState.SKIPPED, RunState.CANCELLED, RunState.FAILED})


@dataclass(frozen=True)
class Claim:
    """What a request became: a run this task created with its lease (``created``, with the
    ``read`` it may reuse), a leased run to drive (``drive``), or a ``decided`` record."""

    created: RunRecord | None = None
    read: Read | None = None
    drive: str | None = None
    decided: RunRecord | None = None


def new_record(
    request: RotateRequest,
    rid: str,
    rule: Rule | None,
    from_version: int | None,
    state: str,
    grace: str,
    attempts_max: int | None = None,
) -> RunRecord:
    """The run record a request starts as (in ``state``; ``step`` is ``claim``);
    ``attempts_max``: the workers' attempt limit, so ``status`` shows "attempt N of M"."""
    return RunRecord(
        rotation_id=rid,
        path=request.path,
        state=state,
        step="claim",
        trigger=request.trigger,
        rotator=rule.rotator if rule else None,
        event_id=request.event_id,
        actor=request.actor,
        reason=request.reason,
        from_version=from_version,
        grace_period=grace,
        max_concurrent=request.max_concurrent,
        target=rule.target.target if rule else None,
        attempts_max=attempts_max,
    )


class Claims:
    """Decides what a rotate request becomes."""

    def __init__(self, runtime: Runtime, failures: Failures) -> None:
        self.rt = runtime
        self.failures = failures

    def claim(self, request: RotateRequest, owner: str) -> Claim:
        """Start, merge or decide ``request`` (``owner``: this task, which takes the lease)."""
        rule = self.rt.routing.match(request.path)
        grace = self.grace_text(request, rule)
        if rule is None:  # not ours to rotate: decided without asking ScaiVault
            rid = self.first_rid(request, request.from_version, owner)
            record = new_record(request, rid, None, request.from_version, RunState.SKIPPED, grace)
            reason = unrouted_reason(self.rt.routing, request.path)
            return Claim(decided=self._skip(record, reason))
        try:
            started = time.monotonic()
            current = self.rt.vault.read(request.path)
            read = Read(current, time.monotonic() - started)
        except PermanentError as exc:  # e.g. not_found, access_denied: nothing to rotate
            reason = f"cannot read the secret: {reason_of(exc)}"
            # A path that may not exist gets no history stream (a forged event must not create
            # keys that never expire); its record expires and the alert still goes out.
            absent = isinstance(exc, NotFound | AccessDenied)
            return Claim(decided=self.refuse(request, reason, owner, history=not absent))
        # An event names the version it rotates; version 0 never exists, so it is stale too.
        from_version = current.version if request.from_version is None else request.from_version
        if _scheduled(request):
            rid = scheduled_id(request.path, from_version)
        else:
            rid = _manual_rid(request, owner)
        if from_version == current.version:
            created = self._create_now(request, rid, rule, grace, owner, read, started)
            if created is not None:
                return created
        return self._decide(request, rid, rule, grace, owner, current, from_version)

    def _create_now(
        self,
        request: RotateRequest,
        rid: str,
        rule: Rule,
        grace: str,
        owner: str,
        read: Read,
        started: float,
    ) -> Claim | None:
        """The usual case: create the run at once. Any run already there (this id, or another
        run holding the path) refuses the create, and the request is decided as if this attempt
        had not been made."""
        record = new_record(
            request,
            rid,
            rule,
            read.current.version,
            RunState.QUEUED,
            grace,
            attempts_max=self.rt.settings.rotator_max_attempts,
        )
        try:
            created, quiet_for = self.rt.runs.start(record, lease=(owner, self.rt.lease_seconds))
        except (PathBusy, IllegalTransition):
            return None
        # The read is reused unless the path's previous run changed since it began (it may
        # have written a version: a rollback, say); then the driver reads again.
        since_read = time.monotonic() - started + _READ_MARGIN
        fresh = quiet_for is None or quiet_for > since_read
        return Claim(created=created, read=read if fresh else None)

    def _decide(
        self,
        request: RotateRequest,
        rid: str,
        rule: Rule,
        grace: str,
        owner: str,
        current: SecretVersion,
        from_version: int,
    ) -> Claim:
        about = {"path": request.path, "event_id": request.event_id}  # on its log lines
        existing, active = self.rt.runs.lookup(rid, request.path)
        if _scheduled(request):
            event_rid = self._event_rid(request, from_version, existing)
            if event_rid != rid:
                rid = event_rid
                existing, active = self.rt.runs.lookup(rid, request.path)
        if existing is not None and existing.path != request.path:
            # Ids derive from (path, version), but metadata is writable: a run of another path
            # under this id (planted metadata rebuilt by reconcile) is never merged into.
            self.rt.log.warning("rotation_id_taken", rotation_id=rid, holder=existing.path, **about)
            rid = manual_id(request.path)
            existing, active = self.rt.runs.lookup(rid, request.path)
        if existing is not None:
            if existing.state in LEASED:
                return Claim(drive=rid)
            self.rt.log.info("rotation_duplicate", rotation_id=rid, state=existing.state, **about)
            return Claim(decided=existing)
        if (
            active is not None
            and active.state in LEASED
            and (active.from_version == from_version or active.state == RunState.QUEUED)
        ):
            if _manual(request):  # on-call watches this id: it needs an outcome of its own
                record = new_record(request, rid, rule, from_version, RunState.SKIPPED, grace)
                reason = f"rotation {active.rotation_id} holds this path (it rotates it)"
                return Claim(decided=self._skip(record, reason))
            self.rt.log.info("rotation_merged", rotation_id=active.rotation_id, merged=rid, **about)
            return Claim(drive=active.rotation_id)
        problem = _why_not_start(current, from_version, active)
        state = RunState.SKIPPED if problem else RunState.QUEUED
        record = new_record(
            request,
            rid,
            rule,
            from_version,
            state,
            grace,
            attempts_max=self.rt.settings.rotator_max_attempts,
        )
        if problem is not None:
            return Claim(decided=self._skip(record, problem))
        try:
            record = self.rt.runs.create(record, lease=(owner, self.rt.lease_seconds))
        except PathBusy as exc:
            return Claim(decided=self._skip(record, f"rotation {exc.holder} holds this path"))
        except IllegalTransition:  # a concurrent delivery created it first: merge
            return Claim(drive=rid)
        return Claim(created=record)  # other runs were here: the driver reads again

    def refuse(
        self,
        request: RotateRequest,
        reason: str,
        owner: str | None = None,
        history: bool = True,
    ) -> RunRecord:
        """Record ``request`` as a ``failed`` run that stored nothing, loudly (a log line, a
        metric, a history entry unless ``history`` is False, an alert), under the id its run
        would have had; an existing record with that id is returned as it is (the request did
        get an outcome)."""
        rule = self.rt.routing.match(request.path)
        rid = self.first_rid(request, request.from_version, owner)
        grace = self.grace_text(request, rule)
        record = new_record(request, rid, rule, request.from_version, RunState.FAILED, grace)
        return self.failures.refuse(record, reason, expire=self._decision_ttl, history=history)

    def first_rid(
        self, request: RotateRequest, from_version: int | None, owner: str | None = None
    ) -> str:
        """The id of a request decided before the secret was read: a scheduled one's own,
        so every delivery of the same event names the same decision (a manual one's derives
        from its task, ``owner``)."""
        if _scheduled(request) and from_version is not None:
            return self.scheduled_rid(request, from_version)
        return _manual_rid(request, owner)

    def scheduled_rid(self, request: RotateRequest, from_version: int) -> str:
        """The id of a scheduled rotation: one per (path, version), unless that run ended
        without a new version (skipped, cancelled, failed): then a later due event for the
        same version starts a run of its own, keyed by its event id. An id a run of another
        path holds (planted metadata) is never used."""
        first = scheduled_id(request.path, from_version)
        earlier = self.rt.runs.get(first)
        rid = self._event_rid(request, from_version, earlier)
        holder = earlier if rid == first else self.rt.runs.get(rid)
        return rid if holder is None or holder.path == request.path else manual_id(request.path)

    def _event_rid(
        self, request: RotateRequest, from_version: int, earlier: RunRecord | None
    ) -> str:
        """:meth:`scheduled_rid`, given the run of (path, version) as ``earlier``."""
        if earlier is not None and earlier.path != request.path:
            return scheduled_id(request.path, from_version, request.event_id)
        if (
            earlier is None
            or earlier.state not in _RESTARTABLE
            or earlier.new_version is not None
            or earlier.event_id == request.event_id
        ):
            return scheduled_id(request.path, from_version)
        return scheduled_id(request.path, from_version, request.event_id)

    def grace_text(self, request: RotateRequest, rule: Rule | None) -> str:
        """The run's grace period: the request's, else the rule's, else the default. A signed
        event's (it has an event id) is raised to ``ROTATOR_MIN_GRACE``: whoever holds the
        webhook secret must not be able to get old credentials revoked at once (an on-call's
        manual rotation, whose event id no webhook can carry, is not raised). A grace
        period that cannot be read (too long, garbled: an old queued message) is ignored."""
        requested = request.grace_period
        if requested:
            try:
                grace = parse_duration(requested)
            except ValueError:
                self.rt.log.warning("grace_period_ignored", grace_period=requested[:40])
            else:
                return format_duration(self._at_least_the_minimum(request, grace))
        if rule is not None and rule.grace_period is not None:
            return format_duration(rule.grace_period)
        return self.rt.settings.rotator_default_grace

    def _at_least_the_minimum(self, request: RotateRequest, grace: timedelta) -> timedelta:
        floor = self.rt.settings.min_grace()
        if request.event_id is None or _manual(request) or grace >= floor:
            return grace
        self.rt.log.warning(
            "grace_period_raised",
            path=request.path,
            event_id=request.event_id,
            grace_period=format_duration(grace),
            minimum=format_duration(floor),
        )
        return floor

    def _skip(self, record: RunRecord, reason: str) -> RunRecord:
        """Record a request decided without a run: it expires like the event's dedupe claim.

        An unrouted path gets no history stream of its own (a forged event must not create
        keys that never expire), but an alert: it is a configuration problem."""
        skipped = RunRecord(**{**record.to_dict(), "state": RunState.SKIPPED, "last_error": reason})
        try:
            self.rt.runs.create(skipped, expire=self._decision_ttl)
        except IllegalTransition:
            return self.rt.runs.require(record.rotation_id)
        self.rt.log.info(
            "rotation_skipped", rotation_id=record.rotation_id, path=record.path, reason=reason
        )
        self.rt.runs.outcome(record.rotator, RunState.SKIPPED)
        if record.rotator is None:
            self.failures.alert(skipped, RunState.SKIPPED, reason, "claim")
            return skipped
        self.rt.runs.history(
            record, "rotation_skipped", state="skipped", outcome="skipped", detail=reason
        )
        return skipped

    @property
    def _decision_ttl(self) -> float:
        """How long a record that stored nothing (skipped, refused at the claim) is kept: as
        long as the receiver remembers the event ids, so duplicates still find it."""
        return self.rt.settings.decision_ttl().total_seconds()


def _scheduled(request: RotateRequest) -> bool:
    return request.trigger == "schedule"


def _manual(request: RotateRequest) -> bool:
    """An on-call's rotation through the ledger (a webhook's ``trigger`` may say manual too)."""
    return request.trigger == "manual" and is_manual_event(request.event_id)


def _manual_rid(request: RotateRequest, owner: str | None) -> str:
    """A manual rotation's id: from its ledger entry, so a message the sweep published again
    names the same run (and the CLI knows it before publishing); else from the task."""
    return manual_id(request.path, request.event_id if _manual(request) else owner)


def _why_not_start(
    current: SecretVersion, from_version: int, active: RunRecord | None
) -> str | None:
    if active is not None:
        return f"rotation {active.rotation_id} is {active.state} on this path"
    if from_version != current.version:
        return f"stale request: it rotates version {from_version}, current is {current.version}"
    return None
