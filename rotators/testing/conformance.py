"""The conformance checks: one rotator against one target, each check a method of the kit.

:attr:`Conformance.CHECKS` names them in the order :meth:`Conformance.run` runs them; the
checks of what happens when things go wrong at the target live in
:mod:`rotators.testing.target_checks`, the bookkeeping they share in :mod:`rotators.testing.kit`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rotators.errors import RotatorError
from rotators.secret import SecretData
from rotators.testing.errors import ConformanceError
from rotators.testing.rotation import Rotation
from rotators.testing.target_checks import TargetChecks


class Conformance(TargetChecks):
    """The conformance checks for one rotator against one target. :meth:`run` runs them all."""

    #: Every check, in the order :meth:`run` runs them (each is a method of this class).
    CHECKS = (
        "check_idempotent_steps",
        "check_crash_resume",
        "check_finalize_repeatable",
        "check_verify_rejects_wrong",
        "check_verify_rejects_permanently",
        "check_discard",
        "check_network_faults",
        "check_preflight",
        "check_in_use",
        "check_no_secret_leaks",
    )

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
                self._expect_replaced(new)
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

    def _expect_replaced(self, first: Mapping[str, Any]) -> None:
        """An issuer's second mint returned another credential: allowed only when it replaced
        the first (a password set again), so that no credential nobody knows is left valid."""
        if self.target.is_valid(first):
            raise self.fail(
                "mint called twice in one rotation returned a different value, and the first "
                "still works: a repeated mint must return the same credential or replace it"
            )

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
        """verify must raise a RotatorError for a credential the target does not accept."""
        rotation = self.begin("check_verify_rejects_wrong")
        new = rotation.mint()
        rotation.apply(new)
        wrong = self.wrong(rotation, new)
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
        reads only (the old credential still works, ``Target.snapshot()`` is unchanged), and
        where the target can open sessions (``Target.session(data)``) it counts a session of
        the old credential, stops counting it once closed, and never counts one of the new
        credential."""
        if not self.factory().tells_usage:
            self.skip("check_in_use", "the rotator has no in_use")
            return
        rotation = self.begin("check_in_use")
        new = rotation.mint()
        rotation.apply(new)
        rotation.verify(new)
        rotation.store(new)
        before = self.snapshot()
        rotation.in_use()
        self.expect_valid(rotation.old, True, "the old credential after in_use (it must only read)")
        if self.snapshot() != before:
            raise self.fail("in_use changed the target (Target.snapshot() differs): read only")
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
        """Run every check in :attr:`CHECKS` order; return their names (the ones that did not
        apply are in :attr:`skipped`). Raises at the first failure."""
        for name in self.CHECKS:
            getattr(self, name)()
        return list(self.CHECKS)
