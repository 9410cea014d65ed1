"""What a change of a run asks of ``lua/run_transition.lua``, and why the script may refuse it.

:class:`Change` is the script's ARGV besides the fields to set; :func:`refusal` turns the
script's answer into the error of the one exception tree. :class:`Sealed` is a minted value a
change keeps (encrypted) in the run record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.errors import (
    FinalizeTooEarly,
    IllegalTransition,
    LeaseLost,
    PathBusy,
    RunHeld,
    RunNotFound,
    StoreError,
)
from orchestrator.state.records import RunState, iso_ms


@dataclass(frozen=True)
class Change:
    """What a transition script is asked to do, besides setting fields (see run_transition.lua)."""

    to: str
    allowed: set[str] = field(default_factory=set)
    owner: str | None = None
    refuse_if_sealed: bool = False
    due_in: float | None = None
    count: tuple[str, str] | None = None
    legacy_due: str = ""

    def argv(self) -> list[str]:
        """ARGV[2..8] of run_transition.lua."""
        return [
            self.to,
            ",".join(sorted(self.allowed)),
            self.owner or "",
            "1" if self.refuse_if_sealed else "",
            "" if self.due_in is None else str(int(self.due_in * 1000)),
            self.count[1] if self.count else "",
            self.legacy_due,
        ]


def refusal(status: str, detail: str, rotation_id: str, path: str, to: str) -> StoreError:
    """The error for a transition the script refused (``status`` says why)."""
    rid = rotation_id
    if status == "missing":
        return RunNotFound(f"no rotation {rid!r}", rotation_id=rid)
    if status == "lease":
        return LeaseLost(f"rotation {rid}: another worker holds the lease", rotation_id=rid)
    if status == "sealed":
        return IllegalTransition(
            f"rotation {rid} is {detail} and its new value may already be applied at the "
            f"target; retry it instead of moving it to {to}",
            rotation_id=rid,
            state=detail,
        )
    if status == "sent":
        return IllegalTransition(
            f"rotation {rid} is {detail} and has begun writing its new version to ScaiVault "
            f"(a write may still land); it cannot become {to}",
            rotation_id=rid,
            state=detail,
        )
    if status == "busy":
        return PathBusy(
            f"path {path!r} is held by rotation {detail}", rotation_id=rid, holder=detail
        )
    if status == "early":
        return FinalizeTooEarly(
            f"rotation {rid} is in grace until {iso_ms(detail) if detail else '?'} (Redis's "
            "clock) and no early finalize was requested",
            rotation_id=rid,
            state=RunState.GRACE,
        )
    if status == "held":
        return RunHeld(
            f"rotation {rid} is held by {detail} (e.g. a rollback); it cannot become {to} now",
            rotation_id=rid,
            state=RunState.GRACE,
        )
    return IllegalTransition(
        f"rotation {rid} is {detail}; it cannot become {to}", rotation_id=rid, state=detail
    )


@dataclass(frozen=True)
class Sealed:
    """A sealed (Fernet-encrypted) new value to keep in the run, and how it may be in use.

    ``in_place`` (updaters): it may be applied at the target before it is stored.
    """

    blob: str
    in_place: bool = True

    @property
    def field(self) -> str:
        """The run hash field that holds it."""
        return "sealed" if self.in_place else "minted"
