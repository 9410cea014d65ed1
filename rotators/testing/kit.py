"""What every conformance check shares: the rotator and target under test, the secret values
seen so far (sentinels searched for in everything the rotator says), and how a step is run
and a failure reported.

Every check runs rotations through :class:`~rotators.testing.rotation.Rotation` and fails with
a :class:`~rotators.testing.errors.ConformanceError` whose message has the sentinels blanked
out; a check that does not apply to this rotator or target is skipped, saying why.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rotators.contract import MemoryNotes, Rotator
from rotators.testing.errors import ConformanceError, ConformanceSkipped
from rotators.testing.log import CapturingLog, RecordListHandler
from rotators.testing.rotation import Rotation
from rotators.testing.scenario import Target, wrong_credential

SENTINEL_MIN_LENGTH = 6


class Kit:
    """One rotator against one target: the bookkeeping every check uses."""

    def __init__(
        self,
        rotator: Callable[[], Rotator],
        target: Target,
        *,
        verify_timeout: float = 30.0,
        step_timeout: float = 30.0,
        strict: bool = False,
    ) -> None:
        self.factory = rotator
        self.target = target
        self.verify_timeout = verify_timeout
        #: Seconds a step may run while the target fails (``check_network_faults``) before
        #: the kit gives up on it: a step without a timeout of its own would wait forever.
        self.step_timeout = step_timeout
        #: Fail, rather than skip with a warning, when the adapter has no ``fault(kind)``.
        self.strict = strict
        self.log = CapturingLog()
        self.errors: list[str] = []
        self.sentinels: set[str] = set()
        self.records: list[str] = []
        self.notes: list[MemoryNotes] = []
        self.check_name = ""
        self.public_fields: frozenset[str] = frozenset()
        #: The checks that did not apply, each with why. Where that leaves something the
        #: engine relies on untested (the adapter has no ``fault``), a ConformanceSkipped
        #: warning says so too, so pytest's summary shows it.
        self.skipped: dict[str, str] = {}

    @property
    def strategy(self) -> str:
        return self.factory().strategy

    def remember(self, data: Mapping[str, Any]) -> None:
        """Every string value of a credential becomes a sentinel searched for in the output."""
        for key, value in data.items():
            if key in self.public_fields:
                continue
            if isinstance(value, str) and len(value) >= SENTINEL_MIN_LENGTH:
                self.sentinels.add(value)

    def leaks(self, text: str) -> bool:
        """Whether ``text`` holds a secret value seen so far."""
        return any(sentinel in text for sentinel in self.sentinels)

    def fail(self, message: str, original: BaseException | None = None) -> ConformanceError:
        """A ConformanceError with every known secret value blanked out of ``message``."""
        for sentinel in sorted(self.sentinels, key=len, reverse=True):
            message = message.replace(sentinel, "[REDACTED]")
        error = ConformanceError(f"{self.check_name}: {message}")
        error.original = original
        return error

    def skip(self, check: str, why: str, *, warn: bool = False) -> None:
        """Record that ``check`` does not apply here; ``warn`` when that is a gap."""
        self.skipped[check] = why
        if warn:
            warnings.warn(f"{check} skipped: {why}", ConformanceSkipped, stacklevel=3)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run a step; keep any exception's full text and turn it into a ConformanceError."""
        handler = RecordListHandler(self.records)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            yield
        except Exception as exc:
            self.errors.append("".join(traceback.format_exception(exc)) + repr(exc.args))
            raise self.fail(f"{name} raised {type(exc).__name__}: {_safe(exc)}", exc) from None
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)

    def expect_valid(self, data: Mapping[str, Any], valid: bool, what: str) -> None:
        if self.target.is_valid(data) != valid:
            raise self.fail(f"the target {'refuses' if valid else 'still accepts'} {what}")

    def complete(self, rotation: Rotation, new: Mapping[str, Any]) -> None:
        """apply, verify, store, finalize; then the new credential works and the old is gone."""
        rotation.apply(new)
        rotation.verify(new)
        rotation.store(new)
        rotation.finalize(new)
        self.expect_final(rotation, new)

    def expect_final(self, rotation: Rotation, new: Mapping[str, Any]) -> None:
        self.expect_valid(new, True, "the new credential after finalize")
        if self.strategy != "vault-only":
            self.expect_valid(rotation.old, False, "the old credential after finalize")

    def begin(self, name: str) -> Rotation:
        self.check_name = name
        return Rotation(self, self.target.setup())

    def wrong(self, rotation: Rotation, new: Mapping[str, Any]) -> dict[str, Any]:
        """A credential the target must refuse (the target's own, else the kit's guess)."""
        make_wrong = getattr(self.target, "wrong_credential", None)
        wrong = dict(make_wrong(new) if make_wrong else wrong_credential(rotation.old, new))
        self.remember(wrong)
        return wrong

    def snapshot(self) -> object:
        """The target's own account of its credentials (``Target.snapshot``), or None."""
        take = getattr(self.target, "snapshot", None)
        return take() if take is not None else None


def _safe(exc: BaseException) -> str:
    """An exception's message for our own failure text, cut short (it is checked for leaks)."""
    return str(exc)[:300]
