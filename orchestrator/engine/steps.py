"""The step runner: a leased run's steps under a heartbeat, and what each kind of failure becomes.

The steps run while the lease keeper renews the run's lease, with a deadline that keeps the
task inside its time limit. A transient error retries (:meth:`Failures.retry_or_give_up`); any
other error goes to the caller's handler; a refused state change (on-call cancelled the run,
another worker took it over) stops the worker quietly. A run whose rotator the routing file no
longer names, or that spent its attempts, needs attention instead of running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.engine.lease import Heartbeat
from orchestrator.errors import IllegalTransition, LeaseLost, reason_of
from orchestrator.state.records import RunRecord, RunState
from rotators.errors import TransientError

if TYPE_CHECKING:
    from orchestrator.engine.budget import Budgets
    from orchestrator.engine.failures import Failures
    from orchestrator.engine.runtime import Runtime
    from orchestrator.routing import Rule
    from rotators.contract import Rotator


class StepRunner:
    """Runs a leased rotation's steps and hands each failure to :class:`Failures`."""

    def __init__(self, runtime: Runtime, failures: Failures, budgets: Budgets) -> None:
        self.rt = runtime
        self.failures = failures
        self.budgets = budgets

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
        attempt budget), waits for a slot of its target (:mod:`~orchestrator.engine.budget`) or
        stopped (cancelled, taken over), True when it settled. The slot is renewed with the
        lease and given back however the steps end.
        """
        routed = self._rotator_or_fail(record, owner)
        if routed is None or self._over_budget(record, owner):
            return False
        rule, rotator = routed
        budget = rule.target.capped(record.max_concurrent)
        slot = self.budgets.take(record, budget, rotator, owner=owner)
        if slot is None:  # every slot of the target is taken: wait without holding a worker
            self.budgets.wait(record, budget, owner)
            return False
        rid = record.rotation_id
        retry: TransientError | None = None
        lease = self.rt.lease_seconds
        with Heartbeat(self.rt.runs, rid, owner, lease, self.rt.keeper, self.rt.log) as beat:
            beat.also(slot.renew)
            self.rt.guard.watch(beat, time.monotonic() + self._wait_budget(), (record, owner))
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
                slot.release()
        if retry is not None:
            self.failures.retry_or_give_up(rid, owner, retry)
        return True

    def _wait_budget(self) -> float:
        """Seconds a task may spend before it stops waiting (verify retries): its time limit
        less room for the store step's ScaiVault retries, so a hard kill never cuts a step."""
        limit = self.rt.settings.rotator_task_time_limit
        return max(limit / 2, limit - self.rt.settings.scaivault_retry_deadline - 10.0)

    def _stopped(self, rotation_id: str, owner: str, exc: LeaseLost | IllegalTransition) -> None:
        """A state change was refused: expected when on-call cancelled the run or another
        worker took it over (stop quietly); anything else is a bug to be loud about."""
        record = self.rt.runs.get(rotation_id)
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
            if record is not None and record.state == RunState.CANCELLED:
                # `cancel --wait` waits for this: the worker has let go of the run, after
                # revoking (or recording as left valid) what it minted
                self.rt.runs.history(record, "rotation_stopped", detail="cancelled")
            return
        reason = f"unexpected state: {reason_of(exc)}"
        self.failures.fail(rotation_id, "needs_attention", reason, owner)

    def _rotator_or_fail(self, record: RunRecord, owner: str) -> tuple[Rule, Rotator] | None:
        rule = self.rt.routing.match(record.path)
        if rule is None or rule.rotator != record.rotator:
            reason = (
                f"the routing file no longer routes this path to {record.rotator!r}; "
                "fix the routing file, then retry"
            )
            self.failures.fail(record.rotation_id, "needs_attention", reason, owner)
            return None
        return rule, self.rt.routing.rotator_for(rule)

    def _over_budget(self, record: RunRecord, owner: str) -> bool:
        limit = self.rt.settings.rotator_max_attempts
        if record.attempts <= limit:
            return False
        last = record.last_error or "a worker died during each attempt"
        reason = f"gave up after {limit} attempts (ROTATOR_MAX_ATTEMPTS); last: {last}"
        self.failures.fail(record.rotation_id, "needs_attention", reason, owner)
        return True
