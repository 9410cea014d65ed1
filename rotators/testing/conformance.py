"""The conformance checks: one rotator against one target, each check a method of the kit.

Every check runs rotations through :class:`~rotators.testing.rotation.Rotation`, remembers
each credential's string values as sentinels and fails with a
:class:`~rotators.testing.errors.ConformanceError` whose message has them blanked out.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rotators.contract import MemoryNotes, Rotator
from rotators.errors import RotatorError
from rotators.secret import SecretData
from rotators.testing.errors import ConformanceError
from rotators.testing.log import CapturingLog, RecordListHandler
from rotators.testing.rotation import Rotation
from rotators.testing.scenario import Target, wrong_credential

SENTINEL_MIN_LENGTH = 6


class Conformance:
    """The conformance checks for one rotator against one target. :meth:`run` runs them all."""

    CHECKS = (
        "check_idempotent_steps",
        "check_crash_resume",
        "check_finalize_repeatable",
        "check_verify_rejects_wrong",
        "check_in_use",
        "check_no_secret_leaks",
    )

    def __init__(
        self,
        rotator: Callable[[], Rotator],
        target: Target,
        *,
        verify_timeout: float = 30.0,
    ) -> None:
        self.factory = rotator
        self.target = target
        self.verify_timeout = verify_timeout
        self.log = CapturingLog()
        self.errors: list[str] = []
        self.sentinels: set[str] = set()
        self.records: list[str] = []
        self.notes: list[MemoryNotes] = []
        self.check_name = ""
        self.public_fields: frozenset[str] = frozenset()

    # --- bookkeeping ----------------------------------------------------------------------

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

    def fail(self, message: str, original: BaseException | None = None) -> ConformanceError:
        """A ConformanceError with every known secret value blanked out of ``message``."""
        for sentinel in sorted(self.sentinels, key=len, reverse=True):
            message = message.replace(sentinel, "[REDACTED]")
        error = ConformanceError(f"{self.check_name}: {message}")
        error.original = original
        return error

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

    # --- checks ----------------------------------------------------------------------------

    def check_idempotent_steps(self) -> None:
        """Every step twice in a row; issuers mint the same credential and keep the old one."""
        rotation = self.begin("check_idempotent_steps")
        new = rotation.mint()
        dropped = sorted(set(rotation.old) - set(new))
        if dropped:
            raise self.fail(f"mint dropped fields of the current data: {dropped}")
        again = rotation.mint()
        if self.strategy == "issuer":
            if again != new:
                self.expect_valid(new, False, "the first of two values minted in one rotation")
                new = again
            self.expect_valid(rotation.old, True, "the old credential before finalize (issuer)")
        rotation.apply(new)
        rotation.apply(new)
        rotation.verify(new)
        rotation.verify(new)
        rotation.store(new)
        rotation.finalize(new)
        rotation.finalize(new)
        self.expect_final(rotation, new)

    def crash_points(self) -> list[str]:
        steps = ["mint", "apply", "verify", "store", "finalize"]
        return [s for s in steps if s != "apply" or self.strategy == "updater"]

    def check_crash_resume(self) -> None:
        """For each step: run it, crash (lose the result), run it again fresh, carry on."""
        for crash_at in self.crash_points():
            rotation = self.begin(f"check_crash_resume[{crash_at}]")
            new = rotation.mint()
            if crash_at == "mint":
                new = rotation.mint()
            for name in ("apply", "verify", "store"):
                getattr(rotation, name)(new)
                if crash_at == name:
                    getattr(rotation, name)(new)
            rotation.finalize(new)
            if crash_at == "finalize":
                rotation.finalize(new)
            self.expect_final(rotation, new)

    def check_finalize_repeatable(self) -> None:
        """finalize three times, each by a fresh instance, is success every time."""
        rotation = self.begin("check_finalize_repeatable")
        new = rotation.mint()
        self.complete(rotation, new)
        rotation.finalize(new)
        rotation.finalize(new)
        self.expect_final(rotation, new)

    def check_verify_rejects_wrong(self) -> None:
        """verify must raise for a credential the target does not accept."""
        rotation = self.begin("check_verify_rejects_wrong")
        new = rotation.mint()
        rotation.apply(new)
        make_wrong = getattr(self.target, "wrong_credential", None)
        wrong = make_wrong(new) if make_wrong else wrong_credential(rotation.old, new)
        self.remember(wrong)
        try:
            with self.step("verify"):
                self.factory().verify(rotation.ctx(), SecretData(wrong))
        except ConformanceError as err:
            if not isinstance(err.original, RotatorError):
                raise self.fail(
                    "verify of a wrong credential raised a non-RotatorError: "
                    f"{type(err.original).__name__}"
                ) from None
        else:
            raise self.fail("verify accepted a wrong credential")
        self.complete(rotation, new)

    def check_in_use(self) -> None:
        """Rotators that tell who uses a credential (``in_use``): it returns a Usage or None,
        reads only (the old credential still works), and where the target can open sessions
        (``Target.session(data)``) it counts a session of the old credential, stops counting it
        once closed, and never counts one of the new credential."""
        if not self.factory().tells_usage:
            return
        rotation = self.begin("check_in_use")
        new = rotation.mint()
        rotation.apply(new)
        rotation.verify(new)
        rotation.store(new)
        rotation.in_use()
        self.expect_valid(rotation.old, True, "the old credential after in_use (it must only read)")
        session = getattr(self.target, "session", None)
        if session is not None:
            with session(new):
                self._expect_sessions(rotation, 0, "with only the new credential in use")
            with session(rotation.old):
                self._expect_sessions(rotation, 1, "with a session of the old credential open")
            self._expect_sessions(rotation, 0, "after the old credential's session closed")
        rotation.finalize(new)
        self.expect_final(rotation, new)

    def _expect_sessions(self, rotation: Rotation, at_least: int, when: str) -> None:
        """in_use of the old credential reports ``at_least`` sessions (exactly 0 when 0), asked
        again for up to ``verify_timeout`` while the target's view catches up."""
        deadline = time.monotonic() + self.verify_timeout
        while True:
            usage = rotation.in_use()
            seen = None if usage is None else usage.sessions
            ok = seen is not None and (seen >= at_least if at_least else seen == 0)
            if ok:
                return
            if time.monotonic() > deadline:
                raise self.fail(f"in_use of the old credential reported {seen} sessions {when}")
            time.sleep(0.2)

    def check_no_secret_leaks(self) -> None:
        """No secret value in ctx.log, the logging module's records, any exception's text, or
        the rotator's notes."""
        if not self.sentinels:
            self.check_verify_rejects_wrong()
        self.check_name = "check_no_secret_leaks"
        haystacks = {
            "ctx.log": self.log.text(),
            "logging": "\n".join(self.records),
            "exceptions": "\n".join(self.errors),
            "notes": "\n".join(f"{k}={v}" for n in self.notes for k, v in n.as_dict().items()),
        }
        for where, text in haystacks.items():
            for sentinel in self.sentinels:
                if sentinel in text:
                    raise self.fail(f"a secret value ({len(sentinel)} chars) appears in {where}")

    def run(self) -> list[str]:
        """Run every check in order; return their names. Raises at the first failure."""
        for name in self.CHECKS:
            getattr(self, name)()
        return list(self.CHECKS)


def _safe(exc: BaseException) -> str:
    """An exception's message for our own failure text, cut short (it is checked for leaks)."""
    return str(exc)[:300]
