"""Making failures loud: what a failed step becomes (retry, failed, needs_attention).

A transient error retries the task after a countdown of seconds until ``ROTATOR_MAX_ATTEMPTS``
attempts, then the run needs attention. A rotator asking to wait longer than
``ROTATOR_RETRY_BACKOFF_MAX`` (``retry_after``, e.g. an API budget used up for an hour) gets no
Celery countdown: the run's lease is held that long and the sweeper re-drives it. Every failure
that ends a run writes its state, one error log line, a metric, a history entry and an alert.
A refused state change is expected when on-call cancelled the run or another worker took it
over: the worker stops quietly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.engine.lease import Heartbeat
from orchestrator.errors import IllegalTransition, LeaseLost, RetryLater, reason_of
from orchestrator.state.runs import RunRecord
from rotators.errors import TransientError

if TYPE_CHECKING:
    from orchestrator.engine.alerts import Alerter
    from orchestrator.engine.runtime import Runtime
    from rotators.contract import Rotator


class FailurePolicy:
    """Runs a leased rotation's steps and turns each kind of failure into its outcome."""

    def __init__(self, runtime: Runtime, alerter: Alerter | None) -> None:
        self.rt = runtime
        self.alerter = alerter

    def run(
        self,
        record: RunRecord,
        owner: str,
        steps: Callable[[Rotator], None],
        on_error: Callable[[Exception], None],
    ) -> bool:
        """Run ``steps`` with the run's rotator while a heartbeat keeps ``owner``'s lease.

        A transient error retries (raises :class:`RetryLater`) or gives up; any other error
        goes to ``on_error``. Returns False when the run did not go (no rotator, over its
        attempt budget) or stopped (cancelled, taken over), True when it settled.
        """
        rotator = self._rotator_or_fail(record, owner)
        if rotator is None or self._over_budget(record, owner):
            return False
        rid = record.rotation_id
        retry: TransientError | None = None
        lease = self.rt.lease_seconds
        with Heartbeat(self.rt.store, rid, owner, lease, self.rt.keeper, self.rt.log) as beat:
            self.rt.guard.watch(beat, time.monotonic() + self._wait_budget())
            try:
                steps(rotator)
            except (LeaseLost, IllegalTransition) as exc:
                self._stopped(rid, owner, exc)
                return False
            except TransientError as exc:
                retry = exc
            except Exception as exc:
                on_error(exc)
            finally:
                self.rt.guard.watch(None)
        if retry is not None:
            self._retry_or_give_up(rid, owner, retry)
        return True

    def _wait_budget(self) -> float:
        """Seconds a task may spend before it stops waiting (verify retries): its time limit
        less room for the store step's ScaiVault retries, so a hard kill never cuts a step."""
        limit = self.rt.settings.rotator_task_time_limit
        return max(limit / 2, limit - self.rt.settings.scaivault_retry_deadline - 10.0)

    def fail(
        self, rotation_id: str, state: str, reason: str, owner: str | None, step: str | None = None
    ) -> None:
        """Fail loudly: state, one error log line, a metric, a history entry and an alert."""
        try:
            before = self.rt.store.require(rotation_id)
            dropped: dict[str, Any] = {"sealed": None} if state == "failed" else {}
            record = self.rt.store.transition(
                rotation_id,
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

    def refuse(self, record: RunRecord, reason: str, expire: float | None = None) -> RunRecord:
        """Record a request that failed before it could start (loud: log, metric, alert);
        ``expire`` (seconds) lets the record go once it no longer matters (it stored nothing)."""
        try:
            failed = self.rt.store.create(
                RunRecord(**{**record.to_dict(), "state": "failed", "last_error": reason}),
                expire=expire,
            )
        except IllegalTransition:
            return self.rt.store.require(record.rotation_id)
        self._announce(failed, "failed", reason, "read")
        return failed

    def alert(self, record: RunRecord, state: str, reason: str, step: str | None) -> None:
        """Send an alert about ``record`` (when an alert webhook is configured), after the
        journal's queued writes: whoever the alert wakes finds the history entry behind it."""
        self.rt.journal.flush()
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
        self, record: RunRecord, state: str, reason: str, step: str | None, **fields: Any
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
        self.rt.journal.outcome(record.rotator, state)
        self.rt.journal.history(
            record,
            "rotation_failed",
            state=state,
            step=step,
            outcome=state,
            detail=reason,
            **fields,
        )
        self.alert(record, state, reason, step)

    def _retry_or_give_up(self, rotation_id: str, owner: str, exc: TransientError) -> None:
        record = self.rt.store.require(rotation_id)
        reason = reason_of(exc)
        journaled = self.rt.journal.failed_step(rotation_id)
        # A finalize is named "finalize" throughout (its give-up too); a run before grace is
        # named by the step that raised, which its record may not name (vault-only mint, verify).
        step = record.step if record.state == "finalizing" else journaled or record.step
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
        wait = max(
            min(cap, 2.0**record.attempts) * random.uniform(0.5, 1.0), exc.retry_after or 0.0
        )
        # A Celery countdown longer than the backoff cap would sit unacked in the worker for
        # that long (kombu#337): hold the lease that long instead; the sweeper re-drives it.
        redrive = wait > cap
        hold = wait if redrive else wait + self.rt.lease_seconds
        try:
            self.rt.store.update(rotation_id, owner=owner, last_error=reason)
            self.rt.store.release_lease(rotation_id, owner, hold)
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
        self.rt.journal.history(
            record, "step_retry", step=step, attempt=record.attempts, detail=reason
        )
        if not redrive:
            raise RetryLater(reason, rotation_id=rotation_id, countdown=wait)

    def _stopped(self, rotation_id: str, owner: str, exc: LeaseLost | IllegalTransition) -> None:
        """A state change was refused: expected when on-call cancelled the run or another
        worker took it over (stop quietly); anything else is a bug to be loud about."""
        record = self.rt.store.get(rotation_id)
        expected = (
            isinstance(exc, LeaseLost)
            or record is None
            or record.is_terminal
            or record.lease_owner != owner
        )
        if expected:
            path = record.path if record else None
            self.rt.log.info(
                "rotation_stopped", rotation_id=rotation_id, path=path, reason=reason_of(exc)
            )
            return
        self.fail(rotation_id, "needs_attention", f"unexpected state: {reason_of(exc)}", owner)

    def _rotator_or_fail(self, record: RunRecord, owner: str) -> Rotator | None:
        rule = self.rt.routing.match(record.path)
        if rule is None or rule.rotator != record.rotator:
            reason = (
                f"the routing file no longer routes this path to {record.rotator!r}; "
                "fix the routing file, then retry"
            )
            self.fail(record.rotation_id, "needs_attention", reason, owner)
            return None
        return self.rt.routing.rotator_for(rule)

    def _over_budget(self, record: RunRecord, owner: str) -> bool:
        limit = self.rt.settings.rotator_max_attempts
        if record.attempts <= limit:
            return False
        last = record.last_error or "a worker died during each attempt"
        reason = f"gave up after {limit} attempts (ROTATOR_MAX_ATTEMPTS); last: {last}"
        self.fail(record.rotation_id, "needs_attention", reason, owner)
        return True
