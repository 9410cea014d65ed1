"""A rotation's notes (:class:`rotators.Notes`) as the engine keeps them: in its run record.

A worker's rotator writes notes under the run's lease, or the hold of its rollback (a worker
that lost it cannot write what would then be someone else's rotation); without one they are
read-only.
"""

from __future__ import annotations

from orchestrator.state.records import RunRecord
from orchestrator.state.runs import RunStore
from rotators.contract import check_note
from rotators.errors import PermanentError


class RunNotes:
    """The notes of one run, as read with its record; ``put`` writes through to the store.

    ``owner`` is the lease (or hold) holder that may write to ``store``; without both the
    notes are read-only.
    """

    def __init__(
        self, record: RunRecord, store: RunStore | None = None, owner: str | None = None
    ) -> None:
        self._record = record
        self._store = store
        self._owner = owner
        self._view = dict(record.notes)

    def get(self, name: str) -> str | None:
        return self._view.get(name)

    def put(self, name: str, value: str) -> None:
        check_note(name, value)
        if self._store is None or self._owner is None:
            raise PermanentError(
                f"note {name!r} cannot be written here: no worker holds this rotation"
            )
        stored = self._store.put_note(self._record, name, value, owner=self._owner)
        self._view = dict(stored.notes)
