"""The rotator conformance kit: prove a rotator plugin is safe to run under the engine.

Call it from your own pytest suite with your rotator and a :class:`Target` you provide (an
adapter that creates a fresh credential at your test target and says whether a credential
works there)::

    from rotators.testing import Conformance

    def test_my_rotator_conforms(my_target):
        Conformance(MyRotator, my_target).run()

The kit plays the engine: it builds :class:`~rotators.RotationContext` objects over an
in-memory ScaiVault (:class:`MemoryVault`), calls the steps on a *fresh rotator instance*
each time (as a restarted worker would), stores new versions the way the engine does, and
checks that

- every step is idempotent: called twice, the second call is harmless (issuers' ``mint``
  returns the same credential for the same ``rotation_id``), ``mint`` keeps every field of the
  current data, and an issuer's old credential keeps working until ``finalize``;
- a rotation resumes after a simulated crash between any two steps (the step that was running
  is run again by a new instance with ``attempt + 1``, seeing the notes the crashed one put:
  ``ctx.notes`` lasts for one rotation, and a new rotation starts with none);
- ``finalize`` is safe to repeat;
- ``verify`` rejects a wrong credential (raises a :class:`~rotators.RotatorError`);
- no secret value (any string of the old, new or wrong data) appears in what the rotator
  logged through ``ctx.log`` or the ``logging`` module, in the text of any exception, or in
  its notes (the engine stores them in clear).

Failures raise :class:`ConformanceError` (an ``AssertionError``) naming the check and step.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from rotators.contract import MemoryNotes, Notes, RotationContext, Rotator, SecretVersion
from rotators.errors import PermanentError, RotatorError, TransientError
from rotators.secret import SecretData

SENTINEL_MIN_LENGTH = 6


class ConformanceError(AssertionError):
    """A rotator broke a rule of the contract; the message names the check and the step.

    ``original`` is the exception a step raised, if any. It is not chained (``__cause__``) so
    that a leaking exception text never reaches the test report; the message is scrubbed.
    """

    original: BaseException | None = None


class MemoryVault:
    """An in-memory, versioned ScaiVault implementing :class:`~rotators.VaultReader`."""

    def __init__(self) -> None:
        self._versions: dict[str, list[SecretVersion]] = {}

    def put(
        self, path: str, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> SecretVersion:
        """Write a new version of ``path`` and return it."""
        versions = self._versions.setdefault(path, [])
        version = SecretVersion(
            path=path,
            version=len(versions) + 1,
            data=SecretData(data),
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC).isoformat(),
        )
        versions.append(version)
        return version

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """The current version of ``path``, or version ``version``."""
        versions = self._versions.get(path)
        if not versions:
            raise PermanentError(f"secret {path!r} not found")
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise PermanentError(f"secret {path!r} has no version {version}")
        return versions[version - 1]


class CapturingLog:
    """A :class:`~rotators.contract.Logger` that keeps every event and field, unredacted."""

    def __init__(self, **bound: Any) -> None:
        self.bound = bound
        self.events: list[dict[str, Any]] = []

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.events.append({"level": level, "event": event, **self.bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def text(self) -> str:
        """Every captured event as JSON lines (``repr`` for values JSON cannot encode)."""
        return "\n".join(json.dumps(e, default=repr) for e in self.events)


def make_context(
    rotator: Rotator | type[Rotator],
    vault: MemoryVault,
    path: str,
    options: Mapping[str, Any] | BaseModel,
    *,
    rotation_id: str | None = None,
    attempt: int = 1,
    log: CapturingLog | None = None,
    version: int | None = None,
    notes: Notes | None = None,
) -> RotationContext:
    """A context for ``path``'s current (or given) version, options validated by the rotator.

    Pass the same ``notes`` to every context of one rotation, as the engine keeps them.
    """
    if not isinstance(options, BaseModel):
        options = rotator.Options.model_validate(dict(options))
    return RotationContext(
        path=path,
        rotation_id=rotation_id or f"rot_{uuid.uuid4().hex[:12]}",
        current=vault.read(path, version),
        options=options,
        log=log or CapturingLog(path=path),
        vault=vault,
        attempt=attempt,
        notes=notes if notes is not None else MemoryNotes(),
    )


@dataclass
class Scenario:
    """A fresh credential at the target: the secret's data and the rotator's options for it.

    ``vault_secrets`` are other ScaiVault paths the rotator reads (e.g. an admin credential).
    ``public_fields`` names fields of ``data`` that are not secret and may be logged (e.g. a
    username); every other string value is searched for in logs and exception texts.
    """

    data: Mapping[str, Any]
    options: Mapping[str, Any] | BaseModel
    path: str = "conformance/secret"
    vault_secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    public_fields: frozenset[str] = frozenset()


@runtime_checkable
class Target(Protocol):
    """What a plugin author implements so the kit can judge their rotator."""

    def setup(self) -> Scenario:
        """Create a new credential at the target; return it with the options that reach it."""
        ...

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        """Does the target accept this credential right now?"""
        ...


def wrong_credential(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` with every string field the rotation changed altered, so it must not work.

    A target may define ``wrong_credential(new)`` itself when this is not wrong enough.
    """
    wrong = dict(new)
    for key, value in new.items():
        if isinstance(value, str) and old.get(key) != value:
            wrong[key] = value + "-wrong"
    return wrong


class Rotation:
    """One rotation as the engine would run it, over a :class:`MemoryVault`."""

    def __init__(self, kit: Conformance, scenario: Scenario) -> None:
        self.kit = kit
        self.scenario = scenario
        self.vault = MemoryVault()
        for path, data in scenario.vault_secrets.items():
            self.vault.put(path, data)
        self.from_version = self.vault.put(scenario.path, scenario.data)
        self.old = dict(scenario.data)
        self.rotation_id = f"rot_{uuid.uuid4().hex[:12]}"
        self.attempt = 0
        self.notes = MemoryNotes()  # kept across the simulated crashes of this rotation
        kit.notes.append(self.notes)
        kit.public_fields = scenario.public_fields
        kit.remember(self.old)
        for data in scenario.vault_secrets.values():
            kit.remember(data)

    def ctx(self, version: int | None = None) -> RotationContext:
        self.attempt += 1
        return make_context(
            self.kit.factory(),
            self.vault,
            self.scenario.path,
            self.scenario.options,
            rotation_id=self.rotation_id,
            attempt=self.attempt,
            log=self.kit.log,
            version=version or self.from_version.version,
            notes=self.notes,
        )

    def mint(self) -> dict[str, Any]:
        with self.kit.step("mint"):
            new = dict(self.kit.factory().mint(self.ctx()))
        self.kit.remember(new)
        return new

    def apply(self, new: Mapping[str, Any]) -> None:
        rotator = self.kit.factory()
        if rotator.strategy == "updater":
            with self.kit.step("apply"):
                rotator.apply(self.ctx(), SecretData(new))

    def verify(self, new: Mapping[str, Any]) -> None:
        """Call verify, retrying TransientError for up to the kit's ``verify_timeout``."""
        deadline = time.monotonic() + self.kit.verify_timeout
        while True:
            try:
                with self.kit.step("verify"):
                    self.kit.factory().verify(self.ctx(), SecretData(new))
                return
            except ConformanceError as err:
                if not isinstance(err.original, TransientError) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def store(self, new: Mapping[str, Any]) -> SecretVersion:
        """Write the new version as the engine does (idempotent on ``rotation_id``)."""
        current = self.vault.read(self.scenario.path)
        if current.metadata.get("rotation_id") == self.rotation_id:
            return current
        return self.vault.put(
            self.scenario.path,
            new,
            {
                "rotation_id": self.rotation_id,
                "previous_version": self.from_version.version,
                "finalize_after": datetime.now(UTC).isoformat(),
                "rotated_by": "scaivault-rotator",
            },
        )

    def finalize(self, new: Mapping[str, Any]) -> None:
        """Like the engine: ``ctx.current`` is still the version rotated from."""
        with self.kit.step("finalize"):
            self.kit.factory().finalize(self.ctx(), SecretData(self.old), SecretData(new))


class Conformance:
    """The conformance checks for one rotator against one target. :meth:`run` runs them all."""

    CHECKS = (
        "check_idempotent_steps",
        "check_crash_resume",
        "check_finalize_repeatable",
        "check_verify_rejects_wrong",
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
        handler = _ListHandler(self.records)
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
                raise self.fail("mint called twice in one rotation returned a different value")
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


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.records.append(text)


def _safe(exc: BaseException) -> str:
    """An exception's message for our own failure text, cut short (it is checked for leaks)."""
    return str(exc)[:300]
