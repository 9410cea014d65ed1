"""Every Redis key and queue name the orchestrator uses, built in this one place.

All keys share the ``svr:`` prefix so operators can find (and back up) them with one pattern.
Paths are embedded as-is: ScaiVault paths never contain ``{``/``}`` or whitespace.
"""

from __future__ import annotations

PREFIX = "svr:"

#: The Celery queue every task of ours goes to (on Redis, also the broker list's key).
TASK_QUEUE = "scaivault"


def event(event_id: str) -> str:
    """Webhook dedupe claim for one event id (``SET NX`` with a TTL of at least 7 days)."""
    return f"{PREFIX}event:{event_id}"


def run(rotation_id: str) -> str:
    """Hash: the run record of one rotation (no secret values; sealed blob only)."""
    return f"{PREFIX}run:{rotation_id}"


def active(path: str) -> str:
    """String: the rotation id currently active on ``path`` (one at a time)."""
    return f"{PREFIX}active:{path}"


def last(path: str) -> str:
    """String: the most recent rotation id on ``path``, active or not."""
    return f"{PREFIX}last:{path}"


def history(path: str) -> str:
    """Stream: the capped audit trail of ``path`` that ``history`` shows."""
    return f"{PREFIX}history:{path}"


#: Sorted set: rotation ids waiting to finalize, scored by finalize time in ms (the due-queue).
DUE = f"{PREFIX}due"

#: Sorted set: active rotation ids scored by lease expiry in ms (re-driven if a worker died).
LEASES = f"{PREFIX}leases"

#: Sorted set: rotations whose finalize waits for the old credential to be unused, scored by
#: when they began to wait in ms (``lua/run_transition.lua`` keeps it; metrics read it).
WAITING = f"{PREFIX}waiting"

#: Hash: rotation id -> a credential it left valid at a target, as JSON (no value), until
#: on-call acknowledges it (:mod:`orchestrator.state.strays`).
STRAYS = f"{PREFIX}strays"


def slots(target: str) -> str:
    """Sorted set: who holds a concurrency slot of ``target`` (member: rotation id and phase),
    scored by the slot's lease expiry in ms on Redis's clock (:mod:`orchestrator.state.slots`)."""
    return f"{PREFIX}slot:{target}"


def slot_waiters(target: str) -> str:
    """Sorted set: rotation ids waiting for a slot of ``target``, scored by when they began to
    wait in ms; a released slot wakes the oldest."""
    return f"{PREFIX}slotwait:{target}"


#: Sorted set: every rotation id by last update in ms, for ``status`` without a path.
RUNS = f"{PREFIX}runs"


def process(process_id: str) -> str:
    """Hash: one live worker or beat process (identity, routing file, last heartbeat), expiring
    some time after its last heartbeat (:mod:`orchestrator.state.workers`)."""
    return f"{PREFIX}process:{process_id}"


#: Sorted set: live process ids scored by their last heartbeat in ms (Redis's clock).
PROCESSES = f"{PREFIX}processes"

#: String: when the last ``sweep`` finished, in ms on Redis's clock (the sweep-age metric).
SWEEP_DONE = f"{PREFIX}sweep:done"

#: Hash: rotations by outcome; field = JSON ``[rotator, outcome]``, value = count (metrics).
METRIC_OUTCOMES = f"{PREFIX}metrics:outcomes"

#: Hash: step-duration histogram; fields = JSON ``[rotator, step, "le", bound]``/``[.., "sum"]``.
METRIC_STEPS = f"{PREFIX}metrics:steps"

#: Sorted set: accepted webhook events with no durable outcome yet (the pending events), scored
#: by the time of their last publish in ms; the sweep re-publishes entries that were lost.
PENDING = f"{PREFIX}pending"

#: Hash: event id -> the Celery message last published for it (ids and paths only, no secret).
PENDING_MESSAGES = f"{PREFIX}pending:messages"

#: Hash: event id -> how many times the sweep re-published it.
PENDING_PUBLISHES = f"{PREFIX}pending:publishes"

#: Kombu's Redis transport: hash of messages a worker took but has not acknowledged yet.
BROKER_UNACKED = "unacked"
