"""Finalize waits while the old credential is still in use, where the rotator can tell.

Before revoking, a finalize whose rule waits (:class:`~orchestrator.routing.UnusedWait`) asks
the rotator who still authenticates with the old credential (``Rotator.in_use``). While
someone does, the run goes back to ``grace`` with who it was (``waiting``), and its due entry is
checked again later with backoff on Redis's clock: no long countdown task, a crashed worker's
check simply comes back when its due-queue claim lapses. History records ``finalize_deferred``
each time; the waiting index (``lua/run_transition.lua``) feeds the metrics. Once
``finalize_wait_max`` has passed since the first deferral, ``when_still_used`` decides: hold
the run as ``needs_attention`` (the default, loud) or finalize anyway. ``finalize --now``
(``finalize_requested``) overrides the wait, and the history says who still used it.
"""

from __future__ import annotations

from datetime import timedelta

from orchestrator.backoff import backoff
from orchestrator.duration import format_duration
from orchestrator.engine.runtime import Runtime
from orchestrator.errors import NeedsAttention
from orchestrator.routing import RECHECK_CAP, UnusedWait
from orchestrator.state.records import RunRecord, RunState
from rotators.contract import RotationContext, Rotator, Usage
from rotators.secret import SecretData
from rotators.versions import parse_time


class FinalizeWait:
    """Decides, before a revoke, whether finalize goes on or waits for the old credential's
    consumers to move off it."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def may_revoke(
        self, record: RunRecord, rotator: Rotator, ctx: RotationContext, old: SecretData, owner: str
    ) -> bool:
        """True when finalize may revoke ``old`` now; False when the run went back to grace to
        wait. Raises :class:`NeedsAttention` once the longest wait is over and the rule says
        to hold the run."""
        policy = self._policy(record, rotator)
        if policy is None:
            return True
        with self.rt.runs.timed(record, "in_use"):
            usage = rotator.in_use(ctx, old)
        if usage is None or not usage.in_use:
            return True
        summary = usage.summary()
        if record.finalize_requested:
            self._record(record, "finalize_in_use", summary, usage, overridden=True)
            return True
        waited = self._waited(record)
        if waited >= policy.max_wait:
            if policy.then == "finalize":
                self._record(record, "finalize_in_use", summary, usage, overridden=False)
                return True
            raise NeedsAttention(
                f"the old credential is still in use after waiting {format_duration(waited)} "
                f"(finalize_wait_max {format_duration(policy.max_wait)}): {summary}; move those "
                f"consumers to the new credential, then `finalize {record.path} --now` revokes "
                "the old one (it stays valid until then)"
            )
        self._defer(record, policy, usage, summary, waited, owner)
        return False

    def _policy(self, record: RunRecord, rotator: Rotator) -> UnusedWait | None:
        rule = self.rt.routing.match(record.path)
        if rule is None or not rule.unused.applies_to(rotator):
            return None
        return rule.unused

    def _waited(self, record: RunRecord) -> timedelta:
        """How long finalize has waited so far (nothing before the first deferral)."""
        since = parse_time(record.waiting_since)
        return timedelta(0) if since is None else max(timedelta(0), self.rt.runs.now() - since)

    def _defer(
        self,
        record: RunRecord,
        policy: UnusedWait,
        usage: Usage,
        summary: str,
        waited: timedelta,
        owner: str,
    ) -> None:
        checks = record.waiting_checks + 1
        delay = self._delay(policy, checks, waited)
        fields = {"sessions": usage.sessions, "checks": checks}
        self.rt.runs.history(  # rides with the state change below
            record, "finalize_deferred", state="grace", detail=summary, step="finalize", **fields
        )
        back = self.rt.runs.transition(
            record, RunState.GRACE, owner=owner, step="grace", waiting=summary,
            waiting_checks=checks,
        )  # fmt: skip
        changed = parse_time(back.updated_at) or self.rt.runs.now()  # Redis's clock, stamped
        due_ms = int((changed.timestamp() + delay) * 1000)
        self.rt.due.schedule(back.rotation_id, due_ms, replace=True)
        self.rt.log.info(
            "finalize_deferred", rotation_id=back.rotation_id, path=back.path, waiting=summary,
            waited_s=round(waited.total_seconds()), next_check_s=round(delay), **fields,
        )  # fmt: skip

    def _delay(self, policy: UnusedWait, checks: int, waited: timedelta) -> float:
        """Seconds to the next check: ``recheck`` doubling per deferral up to the cap, never
        past the moment the longest wait is over (so that decision is not late)."""
        base = policy.recheck.total_seconds()
        cap = max(base, RECHECK_CAP.total_seconds())
        delay = backoff(checks, base=base, cap=cap, jitter=0.1)
        left = (policy.max_wait - waited).total_seconds()
        return max(1.0, min(delay, left))

    def _record(
        self, record: RunRecord, event: str, summary: str, usage: Usage, *, overridden: bool
    ) -> None:
        """Finalize goes on while the old credential is in use: say so, loudly."""
        why = "finalize --now" if overridden else "finalize_wait_max passed (when_still_used)"
        detail = f"revoking the old credential while still in use ({why}): {summary}"
        self.rt.log.warning(
            event, rotation_id=record.rotation_id, path=record.path, sessions=usage.sessions,
            waiting=summary, reason=why,
        )  # fmt: skip
        self.rt.runs.history(record, event, state=record.state, detail=detail, step="finalize")
