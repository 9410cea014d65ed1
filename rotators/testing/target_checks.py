"""The checks of what a rotator does when things go wrong at its target: a credential withdrawn
(``discard``), the target unreachable (network faults), a credential refused (``verify``), and
a question asked before any of it (``preflight``).

They mirror how the engine uses each step (docs/writing-rotators.md#the-conformance-kit): the
engine discards an issuer's minted credential that will never be stored and the new one of a
rollback; it retries a :class:`~rotators.TransientError` and stops on
:class:`~rotators.CredentialRejected` or :class:`~rotators.PermanentError`; any other exception
fails the rotation with its type only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from typing import Any

from rotators.errors import CredentialRejected, PermanentError, RotatorError, TransientError
from rotators.secret import SecretData
from rotators.testing.errors import ConformanceError
from rotators.testing.faults import FAULT_MEANING, FAULTS
from rotators.testing.kit import Kit
from rotators.testing.rotation import Rotation

Fault = Callable[[str], AbstractContextManager[Any]]


class TargetChecks(Kit):
    """``check_verify_rejects_permanently``, ``check_discard``, ``check_network_faults`` and
    ``check_preflight``."""

    # --- verify -----------------------------------------------------------------------------

    def check_verify_rejects_permanently(self) -> None:
        """verify of a credential the target refuses ends in CredentialRejected or
        PermanentError (what the engine stops on), once TransientError has been retried for the
        rotator's ``verify_timeout`` (at most the kit's) as the engine retries it."""
        rotation = self.begin("check_verify_rejects_permanently")
        new = rotation.mint()
        rotation.apply(new)
        wrong = self.wrong(rotation, new)
        patience = min(self.factory().verify_timeout, self.verify_timeout)
        deadline = time.monotonic() + patience
        while True:
            try:
                with self.step("verify"):
                    self.factory().verify(rotation.ctx(), SecretData(wrong))
            except ConformanceError as err:
                if isinstance(err.original, CredentialRejected | PermanentError):
                    break
                if not isinstance(err.original, TransientError):
                    raise
                if time.monotonic() > deadline:
                    raise self.fail(
                        f"verify still raised TransientError for a credential the target "
                        f"refuses after {patience:g}s (the rotator's verify_timeout): the engine "
                        "would retry the rotation up to ROTATOR_MAX_ATTEMPTS times before anyone "
                        "hears of it. Raise CredentialRejected (or PermanentError) once the "
                        "credential has had time to propagate"
                    ) from None
                time.sleep(0.2)
            else:
                raise self.fail("verify accepted a wrong credential")
        self.complete(rotation, new)

    # --- discard ----------------------------------------------------------------------------

    def check_discard(self) -> None:
        """Issuers with ``can_discard``: discard revokes the new credential and only it (the
        old one keeps working), or raises PermanentError saying it cannot; a second discard is
        success. Both where the engine calls it: a mint never stored, and a rollback."""
        rotator = self.factory()
        if not rotator.can_discard:
            why = "can_discard is False: the engine never calls discard"
            issuer = rotator.strategy == "issuer"
            if issuer:
                why += " (an unused credential stays valid at the target: revoke it by hand)"
            self.skip("check_discard", why, warn=issuer)
            return
        if not rotator.capabilities.issues:
            self.skip("check_discard", f"the engine discards only an issuer's credentials, "
                      f"not a {rotator.strategy}'s")  # fmt: skip
            return
        abandoned = self.begin("check_discard[never stored]")
        before = self.snapshot()
        self._discard_twice(abandoned, abandoned.mint(), before)
        rolled_back = self.begin("check_discard[rollback]")
        before = self.snapshot()
        new = rolled_back.mint()
        rolled_back.verify(new)
        rolled_back.store(new)
        with self.step("verify"):  # a rollback proves the old credential works first
            self.factory().verify(rolled_back.ctx(), SecretData(rolled_back.old))
        self._discard_twice(rolled_back, new, before)

    def _discard_twice(self, rotation: Rotation, new: Mapping[str, Any], before: object) -> None:
        """Discard ``new`` twice; ``before`` is the target's snapshot from before its mint."""
        minted = self.snapshot()
        revoked = self._discard(rotation, new, "discard")
        self.expect_valid(
            rotation.old,
            True,
            "the old credential after discard (discard "
            "revokes only the new credential; every consumer uses the old one)",
        )
        self._expect_only_minted_gone(before, minted, "discard")
        if revoked:
            self.expect_valid(new, False, "the new credential after discard returned (revoke "
                              "it, or raise PermanentError saying it cannot be)")  # fmt: skip
        again = self._discard(rotation, new, "a second discard")
        if revoked and not again:
            raise self.fail(
                "a second discard raised PermanentError: an already revoked "
                "credential is success, or a rollback reports it still valid"
            )
        self.expect_valid(rotation.old, True, "the old credential after a second discard")
        self._expect_only_minted_gone(before, minted, "a second discard")

    def _expect_only_minted_gone(self, before: object, minted: object, what: str) -> None:
        """Where ``Target.snapshot()`` is a set (e.g. of key ids): nothing left it since
        ``minted`` (taken before the discard) but what the mint added since ``before``."""
        after = self.snapshot()
        if not (isinstance(before, AbstractSet) and isinstance(minted, AbstractSet)):
            return
        if not isinstance(after, AbstractSet):
            return
        others = (minted - after) - (minted - before)
        if others:
            raise self.fail(f"{what} removed {len(others)} other credential(s) from the target "
                            "(Target.snapshot() lost them): discard revokes only the new "
                            "credential")  # fmt: skip

    def _discard(self, rotation: Rotation, new: Mapping[str, Any], what: str) -> bool:
        """Discard ``new``; True when it returned, False when it raised PermanentError."""
        try:
            rotation.discard(new)
        except ConformanceError as err:
            if isinstance(err.original, PermanentError):
                return False
            raise self.fail(
                f"{what} raised {type(err.original).__name__} against a healthy target: revoke "
                "the new credential, or raise PermanentError saying it cannot be",
                err.original,
            ) from None
        return True

    # --- network faults -------------------------------------------------------------------

    def check_network_faults(self) -> None:
        """With the target refusing connections, never answering, and answering 5xx
        (``Target.fault(kind)``), every step raises TransientError whose message holds no
        secret value, lets no other exception escape, and the rotation completes afterwards."""
        fault: Fault | None = getattr(self.target, "fault", None)
        if self.strategy == "vault-only":
            self.skip("check_network_faults", "a vault-only rotator calls no target")
            return
        if fault is None:
            why = "the target adapter has no fault(kind) (rotators.testing.FaultProxy makes one "
            if self.strict:
                self.check_name = "check_network_faults"
                raise self.fail(why + "in a line): strict=True requires it, to prove every step "
                                "turns a network failure into TransientError")  # fmt: skip
            self.skip("check_network_faults", why + "in a line)", warn=True)
            return
        for kind in FAULTS:
            self._rotate_through(kind, fault)

    def _rotate_through(self, kind: str, fault: Fault) -> None:
        """One rotation with every step tried once under ``kind`` before it runs for real."""
        rotation = self.begin(f"check_network_faults[{kind}]")
        rotator = self.factory()
        try_under = self._under(kind, fault)
        try_under("mint", lambda: self.factory().mint(rotation.ctx()))
        if rotator.has_preflight:
            try_under("preflight", lambda: self.factory().preflight(rotation.ctx()))
        new = rotation.mint()
        data = SecretData(new)
        if rotator.strategy == "updater":
            try_under("apply", lambda: self.factory().apply(rotation.ctx(), data))
            rotation.apply(new)
        try_under("verify", lambda: self.factory().verify(rotation.ctx(), data))
        if rotator.can_discard and rotator.capabilities.issues:
            try_under("discard", lambda: self.factory().discard(rotation.ctx(), data))
        rotation.verify(new)
        rotation.store(new)
        old = SecretData(rotation.old)
        if rotator.tells_usage:
            try_under("in_use", lambda: self.factory().in_use(rotation.ctx(), old))
        finalize_may_pass = not rotator.capabilities.issues  # nothing to revoke at the target
        try_under(
            "finalize",
            lambda: self.factory().finalize(rotation.ctx(), old, data),
            may_pass=finalize_may_pass,
        )
        rotation.finalize(new)
        self.expect_final(rotation, new)

    def _under(self, kind: str, fault: Fault) -> Callable[..., None]:
        meaning = FAULT_MEANING[kind]

        def try_under(step: str, call: Callable[[], object], may_pass: bool = False) -> None:
            err = self._in_time(step, kind, fault, call)
            if err is not None:
                self._judge(step, meaning, err.original)
                return
            if not may_pass:
                raise self.fail(f"{step} succeeded while the target {meaning}: it must reach "
                                "the target and raise TransientError when it cannot")  # fmt: skip

        return try_under

    def _in_time(
        self, step: str, kind: str, fault: Fault, call: Callable[[], object]
    ) -> ConformanceError | None:
        """Run ``step`` under the fault ``kind`` for at most ``step_timeout`` seconds; return
        what it raised (None when it returned). A step still running then fails the check:
        leaving the fault's block releases the calls it holds (FaultProxy drops them), so the
        step's thread ends too."""
        outcome: list[ConformanceError | None] = []

        def run() -> None:
            try:
                with self.step(step):
                    call()
            except ConformanceError as err:
                outcome.append(err)
            else:
                outcome.append(None)

        worker = threading.Thread(target=run, name=f"conformance-{step}", daemon=True)
        with fault(kind):
            worker.start()
            worker.join(self.step_timeout)
            finished = not worker.is_alive()
        if not finished:
            raise self.fail(
                f"{step} was still running after {self.step_timeout:g}s (the kit's "
                f"step_timeout) while the target {FAULT_MEANING[kind]}: a worker would hang "
                "with it. Give every call to the target a timeout and raise TransientError "
                "when it expires"
            )
        return outcome[0]

    def _judge(self, step: str, meaning: str, raised: BaseException | None) -> None:
        """What ``step`` raised while the target ``meaning``: a TransientError without a
        secret value in it, or a failure saying what to raise instead."""
        name = type(raised).__name__
        if isinstance(raised, TransientError):
            if self.leaks(f"{raised} {raised.args!r}"):
                raise self.fail(f"{step} raised a TransientError whose message holds a secret "
                                f"value while the target {meaning}")  # fmt: skip
            return
        if isinstance(raised, RotatorError):
            raise self.fail(f"{step} raised {name} while the target {meaning}: a network "
                            "failure passes, raise TransientError")  # fmt: skip
        raise self.fail(
            f"{step} let {name} escape while the target {meaning}: translate it "
            "to TransientError in one place, without its text (raise ... from None)"
        )

    # --- preflight --------------------------------------------------------------------------

    def check_preflight(self) -> None:
        """Rotators with ``preflight``: against a healthy target it passes and changes nothing
        (the old credential works, no note is written, ``Target.snapshot()`` is unchanged),
        and with a ScaiVault secret it reads missing it raises PermanentError."""
        if not self.factory().has_preflight:
            self.skip("check_preflight", "the rotator has no preflight")
            return
        rotation = self.begin("check_preflight")
        before, notes = self.snapshot(), rotation.notes.as_dict()
        rotation.preflight()
        self.expect_valid(rotation.old, True, "the old credential after preflight (read only)")
        if rotation.notes.as_dict() != notes:
            raise self.fail("preflight wrote a note: it must change nothing")
        if self.snapshot() != before:
            raise self.fail("preflight changed the target (Target.snapshot() differs): it "
                            "must only read; never mint, apply or revoke")  # fmt: skip
        for path in rotation.scenario.vault_secrets:
            self._preflight_without(rotation, path)
        self.complete(rotation, rotation.mint())

    def _preflight_without(self, rotation: Rotation, path: str) -> None:
        removed = rotation.vault.delete(path)
        try:
            rotation.preflight()
        except ConformanceError as err:
            if not isinstance(err.original, PermanentError):
                raise self.fail(f"preflight with {path!r} missing from ScaiVault raised "
                                f"{type(err.original).__name__}, not PermanentError "
                                "naming what is missing") from None  # fmt: skip
        else:
            raise self.fail(f"preflight passed with {path!r} missing from ScaiVault")
        finally:
            for version in removed:
                rotation.vault.put(path, version.data, version.metadata)
