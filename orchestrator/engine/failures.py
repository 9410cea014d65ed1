"""Making failures loud: a failed run's state, one error log line, a metric, a history entry and an
alert; a transient failure's retry.

A transient error retries the task after a short countdown until ``ROTATOR_MAX_ATTEMPTS``
attempts, then the run needs attention. A rotator asking to wait longer than
``ROTATOR_RETRY_BACKOFF_MAX`` (``retry_after``, e.g. an API budget used up for an hour) gets no
Celery countdown: the run's lease is held that long and the sweeper re-drives it (a long
countdown would sit unacknowledged in the worker, kombu#337).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis

from orchestrator.backoff import backoff
from orchestrator.errors import IllegalTransition, LeaseLost, RetryLater, reason_of
from orchestrator.state.records import RunRecord
from orchestrator.state.strays import Strays
from rotators.errors import TransientError

if TYPE_CHECKING:
    from orchestrator.engine.alerts import Alerter
    from orchestrator.engine.runtime import Runtime
    from orchestrator.vault.client import Retrying


class Failures:
    """What a failure becomes: a retry, or a loud ``failed`` or ``needs_attention``."""

    def __init__(self, runtime: Runtime, alerter: Alerter | None) -> None:
        self.rt = runtime
        self.alerter = alerter

    def fail(
        self, rotation_id: str, state: str, reason: str, owner: str | None, step: str | None = None
    ) -> None:
        """Fail loudly: state, one error log line, a metric, a history entry and an alert."""
        try:
            before = self.rt.runs.require(rotation_id)
            dropped: dict[str, Any] = {"sealed": None} if state == "failed" else {}
            record = self.rt.runs.transition(
                before,
                state,
                owner=owner,
                last_error=reason,
                step=step or before.step,
                **dropped,
            )
        except (LeaseLost, IllegalTransition) as exc:
            self.rt.log.info(
                "rotation_stopped", rotation_id=rotation_id, path=before.path, reason=reason_of(exc)
            )
            return
        self._announce(
            record, state, reason, record.step, rotator=record.rotator, attempt=record.attempts
        )

    def refuse(
        self,
        record: RunRecord,
        reason: str,
        expire: float | None = None,
        history: bool = True,
    ) -> RunRecord:
        """Record a request that failed before it could start (loud: log, metric, alert);
        ``expire`` (seconds) lets the record go once it no longer matters (it stored nothing);
        ``history`` False leaves the path's history stream alone (a path that may not exist)."""
        try:
            failed = self.rt.runs.create(
                RunRecord(**{**record.to_dict(), "state": "failed", "last_error": reason}),
                expire=expire,
            )
        except IllegalTransition:
            return self.rt.runs.require(record.rotation_id)
        self._announce(failed, "failed", reason, "read", history=history)
        return failed

    def alert(self, record: RunRecord, state: str, reason: str, step: str | None) -> None:
        """Send an alert about ``record`` (when an alert webhook is configured), after the
        recorder's queued writes: whoever the alert wakes finds the history entry behind it."""
        self.rt.runs.flush()
        if self.alerter is not None:
            self.alerter.send(
                path=record.path,
                rotation_id=record.rotation_id,
                state=state,
                reason=reason,
                rotator=record.rotator,
                step=step,
            )

    def _announce(
        self,
        record: RunRecord,
        state: str,
        reason: str,
        step: str | None,
        history: bool = True,
        **fields: Any,
    ) -> None:
        self.rt.log.error(
            "rotation_failed",
            rotation_id=record.rotation_id,
            path=record.path,
            state=state,
            step=step,
            reason=reason,
            **fields,
        )
        self.rt.runs.outcome(record.rotator, state)
        if history:
            self.rt.runs.history(
                record,
                "rotation_failed",
                state=state,
                step=step,
                outcome=state,
                detail=reason,
                **fields,
            )
        self.alert(record, state, reason, step)

    def stray(self, record: RunRecord, detail: str, version: int | None = None) -> None:
        """A credential of ``record``'s rotation is left valid at the target and no ScaiVault
        version holds it: record it until on-call acknowledges it (``status`` lists it), with
        an error log line, a history entry and an alert."""
        try:
            Strays(self.rt.runs.client).add(record.path, record.rotation_id, detail, version)
        except redis.RedisError as exc:  # still logged and alerted below
            self.rt.log.warning("stray_not_recorded", rotation_id=record.rotation_id,
                                reason=type(exc).__name__)  # fmt: skip
        self.rt.log.error("credential_left_valid", rotation_id=record.rotation_id,
                          path=record.path, rotator=record.rotator, detail=detail)  # fmt: skip
        self.rt.runs.history(record, "credential_left_valid", detail=detail, state=record.state)
        self.alert(record, record.state, detail, "discard")

    def vault_retrying(self, notice: Retrying) -> None:
        """ScaiVault failed a request of the run this thread drives and it is being retried:
        say so in the run's ``last_error`` now, not only once the retries are spent (a store
        that keeps failing must not look healthy for a minute)."""
        current = self.rt.guard.run
        if current is None:
            return
        record, owner = current
        try:
            when = self.rt.runs.now() + timedelta(seconds=notice.delay)
            self.rt.runs.update(
                record, owner=owner, last_error=notice.describe(),
                next_attempt=when.isoformat(timespec="seconds"),
            )  # fmt: skip
        except (LeaseLost, IllegalTransition, redis.RedisError) as exc:
            self.rt.log.info("vault_retry_not_recorded", rotation_id=record.rotation_id,
                             reason=type(exc).__name__)  # fmt: skip

    def retry_or_give_up(self, rotation_id: str, owner: str, exc: TransientError) -> None:
        record = self.rt.runs.require(rotation_id)
        reason = reason_of(exc)
        raised = self.rt.runs.failed_step(rotation_id)
        # A finalize is named "finalize" throughout (its give-up too); a run before grace is
        # named by the step that raised, which its record may not name (vault-only mint, verify).
        step = record.step if record.state == "finalizing" else raised or record.step
        if record.attempts >= self.rt.settings.rotator_max_attempts:
            self.fail(
                rotation_id,
                "needs_attention",
                f"still failing after {record.attempts} attempts: {reason}",
                owner,
                step=step,
            )
            return
        cap = self.rt.settings.rotator_retry_backoff_max
        wait = max(backoff(record.attempts, base=2.0, cap=cap), exc.retry_after or 0.0)
        # A Celery countdown longer than the backoff cap would sit unacked in the worker for
        # that long (kombu#337): hold the lease that long instead; the sweeper re-drives it.
        redrive = wait > cap
        hold = wait if redrive else wait + self.rt.lease_seconds
        limit = self.rt.settings.rotator_max_attempts
        next_attempt = (self.rt.runs.now() + timedelta(seconds=wait)).isoformat(timespec="seconds")
        try:
            self.rt.runs.update(
                record, owner=owner, last_error=reason, next_attempt=next_attempt,
                attempts_max=limit,
            )  # fmt: skip
            self.rt.runs.release_lease(rotation_id, owner, hold)
        except (LeaseLost, IllegalTransition):
            return
        self.rt.log.warning(
            "rotation_retry",
            rotation_id=rotation_id,
            path=record.path,
            step=step,
            attempt=record.attempts,
            reason=reason,
            countdown=round(wait, 2),
            redrive=redrive,
        )
        self.rt.runs.history(
            record, "step_retry", step=step, attempt=record.attempts, detail=reason
        )
        if not redrive:
            raise RetryLater(reason, rotation_id=rotation_id, countdown=wait)
