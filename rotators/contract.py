"""The rotator plugin contract: what a plugin author subclasses and what each step receives.

A rotator is a class with a ``name`` (its entry-point name in group ``scaivault.rotators``), a
``strategy``, an ``Options`` schema (a pydantic model validated from the routing file) and up to
four step methods. The engine calls the steps; it owns every ScaiVault write. Every step checks
whether its work is already done before acting, so calling it again after a crash is harmless,
and "already done" is success.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, Protocol

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypeVar

from rotators.secret import SecretData

Strategy = Literal["issuer", "updater", "vault-only"]
STRATEGIES: tuple[Strategy, ...] = ("issuer", "updater", "vault-only")


@dataclass(frozen=True)
class SecretVersion:
    """One version of a ScaiVault secret as read from the API (``data`` redacts itself)."""

    path: str
    version: int
    data: SecretData
    secret_type: str = "json"
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None


class VaultReader(Protocol):
    """Read-only ScaiVault access for rotators, e.g. an admin credential at another path."""

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """Return the current version of ``path`` (or version ``version``)."""
        ...


class Logger(Protocol):
    """The slice of a structlog ``BoundLogger`` a rotator may use: events with fields."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


#: What a note's name must look like, and how long its value may be.
NOTE_NAME = re.compile(r"[a-z0-9_]{1,40}")
NOTE_VALUE_MAX = 256


def check_note(name: str, value: str) -> None:
    """Raise :class:`ValueError` unless ``name``/``value`` make a valid note."""
    if not isinstance(name, str) or not NOTE_NAME.fullmatch(name):
        raise ValueError("a note name is 1-40 characters of a-z, 0-9 and _")
    if not isinstance(value, str) or not 1 <= len(value) <= NOTE_VALUE_MAX:
        raise ValueError(f"a note value is a string of 1-{NOTE_VALUE_MAX} characters")


class Notes(Protocol):
    """Facts a rotator remembers about its *own* rotation, across retries and crashes.

    A note is a name (``[a-z0-9_]{1,40}``) and a string value (1-256 characters). The engine
    keeps them in the rotation's run record, **in clear** (Redis, ``status --json``): never
    put a secret value in a note; put an id, a state or a fingerprint (a sha256 prefix) of it.
    A new rotation starts with none. ``put`` writes at once (the engine: only while this
    worker holds the rotation's lease, or the hold of its rollback) and ``get`` sees it
    straight away. Where no worker holds the run, ``put`` raises
    :class:`~rotators.PermanentError`.
    """

    def get(self, name: str) -> str | None:
        """The value last put under ``name`` in this rotation, or ``None``."""
        ...

    def put(self, name: str, value: str) -> None:
        """Remember ``value`` under ``name`` (replacing an earlier value)."""
        ...


class MemoryNotes:
    """:class:`Notes` held in memory only: the default of a context built by hand."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self._notes: dict[str, str] = {}
        for name, value in (initial or {}).items():
            self.put(name, value)

    def get(self, name: str) -> str | None:
        return self._notes.get(name)

    def put(self, name: str, value: str) -> None:
        check_note(name, value)
        self._notes[name] = value

    def as_dict(self) -> dict[str, str]:
        """A copy of every note (for tests and the conformance kit)."""
        return dict(self._notes)


class NoOptions(BaseModel):
    """The options schema of a rotator that takes none: any key in the routing file is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: A rotator's options type: ``Rotator[MyOptions]`` makes ``ctx.options`` a ``MyOptions``.
OptionsT = TypeVar("OptionsT", bound=BaseModel, default=BaseModel)


@dataclass(frozen=True)
class RotationContext(Generic[OptionsT]):
    """Everything a step knows about the rotation it works on.

    ``options`` are the rule's options, validated by the rotator's ``Options`` model when the
    routing file loaded: a ``Rotator[MyOptions]`` gets a ``RotationContext[MyOptions]``, whose
    ``options`` is a ``MyOptions`` (no downcast needed).

    ``rotation_id`` is the idempotency token: the same rotation always carries the same id,
    across retries and crashes, so a rotator can tag what it creates with it and find it again.
    ``current`` is the ScaiVault version being rotated *from*. ``attempt`` counts from 1.
    ``notes`` keeps small facts of this rotation across crashes (see :class:`Notes`).
    ``clock`` is the engine's clock (Redis's in a worker): judge whether a time found in
    metadata has passed with it, never with the machine's own, which may run ahead.
    """

    path: str
    rotation_id: str
    current: SecretVersion
    options: OptionsT
    log: Logger
    vault: VaultReader
    attempt: int = 1
    notes: Notes = field(default_factory=MemoryNotes)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)


@dataclass(frozen=True)
class Usage:
    """Who still authenticates with a credential: what :meth:`Rotator.in_use` reports.

    ``sessions`` counts the open sessions (connections) that authenticated with it; ``who``
    names the account they use (``app_a``); ``clients`` their addresses, ``applications`` the
    names they gave (``application_name``, client names), ``oldest`` when the oldest session
    began. Facts only, never a secret value: the engine shows them to on-call (``status``,
    history) and in alerts.
    """

    sessions: int
    who: str = ""
    clients: tuple[str, ...] = ()
    applications: tuple[str, ...] = ()
    oldest: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sessions, int) or self.sessions < 0:
            raise ValueError("Usage.sessions is a count of sessions: an int of 0 or more")

    @property
    def in_use(self) -> bool:
        """True while at least one session still uses the credential."""
        return self.sessions > 0

    def summary(self, limit: int = 5) -> str:
        """One line for on-call: ``3 sessions of app_a from 10.0.4.7, 10.0.4.9 (api)``."""
        text = f"{self.sessions} session{'' if self.sessions == 1 else 's'}"
        if self.who:
            text += f" of {self.who}"
        if self.clients:
            text += " from " + _first(self.clients, limit)
        if self.applications:
            text += f" ({_first(self.applications, limit)})"
        if self.oldest is not None:
            text += f", oldest since {self.oldest.astimezone(UTC).isoformat(timespec='seconds')}"
        return text


def _first(items: tuple[str, ...], limit: int) -> str:
    """``items`` without repeats, at most ``limit`` of them (and how many more)."""
    unique = list(dict.fromkeys(item for item in items if item))
    shown = ", ".join(unique[:limit])
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


@dataclass(frozen=True)
class Capabilities:
    """What a strategy means for the engine, in one place.

    ``touches_target``: mint and verify act outside the worker (a vault-only value exists
    nowhere until it is stored, so its run needs no state of its own for those steps and a
    resume mints again). ``in_place``: the credential is changed in place by ``apply``, so the
    new value is sealed into the run record before it may be in use, a resume reuses it, and
    an unused value is never discarded (the target may already use it). ``issues``: a second
    credential is minted beside the old one; an unused one is revoked where the rotator can
    (``can_discard``).
    """

    touches_target: bool
    in_place: bool
    issues: bool


#: The capabilities of each strategy.
CAPABILITIES: dict[Strategy, Capabilities] = {
    "issuer": Capabilities(touches_target=True, in_place=False, issues=True),
    "updater": Capabilities(touches_target=True, in_place=True, issues=False),
    "vault-only": Capabilities(touches_target=False, in_place=False, issues=False),
}


class Rotator(Generic[OptionsT]):
    """Base class of every rotator plugin. Subclass it, set the class attributes, override steps.

    ``class AcmeRotator(Rotator[AcmeOptions])`` with ``Options = AcmeOptions`` types the
    ``ctx.options`` its steps receive.

    Strategies:

    - ``issuer``: mints a *second* credential; the old one stays valid until :meth:`finalize`
      revokes it after the grace period (OAuth client secrets, API keys, Salesforce).
    - ``updater``: changes one credential in place with :meth:`apply` (a database password).
      The engine seals the minted value in its run record before ``apply`` so a crash can never
      lose the only working credential.
    - ``vault-only``: the value lives only in ScaiVault (a shared secret both sides read).
    """

    name: ClassVar[str]
    strategy: ClassVar[Strategy]
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: How long the engine keeps retrying :meth:`verify` for propagation delay, in seconds.
    verify_timeout: ClassVar[float] = 30.0
    #: How many times the engine mints a new value after :class:`CredentialRejected`.
    max_mint_attempts: ClassVar[int] = 3
    #: Whether :meth:`discard` revokes a minted credential at the target. The engine calls
    #: ``discard`` only when this is True; a rollback reports the new credential as still valid
    #: (revoke it by hand) when it is False.
    can_discard: ClassVar[bool] = False
    #: How many rotations may work on one target at once (``None``: no limit), unless the
    #: routing rule sets ``max_concurrent``. Every rule naming the same target shares it.
    max_concurrent: ClassVar[int | None] = None

    @property
    def capabilities(self) -> Capabilities:
        """What this rotator's strategy means for the engine (see :data:`CAPABILITIES`)."""
        return CAPABILITIES[self.strategy]

    @property
    def has_preflight(self) -> bool:
        """Whether this rotator checks what a rotation needs without changing anything
        (overrides :meth:`preflight`)."""
        return type(self).preflight is not Rotator.preflight

    @property
    def tells_usage(self) -> bool:
        """Whether this rotator can tell who still uses a credential (overrides :meth:`in_use`)."""
        return type(self).in_use is not Rotator.in_use

    def target(self, options: OptionsT) -> str | None:
        """A stable name of the system a rule's ``options`` point at (``db.internal:5432``,
        an org's URL), so rules rotating against one system share its concurrency budget;
        ``None`` (the default): each rule is its own target. No secret value, no credentials.
        The routing rule's ``target`` overrides it."""
        return None

    def mint(self, ctx: RotationContext[OptionsT]) -> dict[str, Any]:
        """Create the new credential and return the *full* new secret data.

        Keep every field of ``ctx.current.data`` that this rotator does not own.
        """
        raise NotImplementedError(f"rotator {self.name!r} does not implement mint()")

    def apply(self, ctx: RotationContext[OptionsT], new: SecretData) -> None:
        """Updaters only: make the target accept ``new``, checking first whether it already does."""
        if self.strategy == "updater":
            raise NotImplementedError(f"updater {self.name!r} must implement apply()")

    def verify(self, ctx: RotationContext[OptionsT], new: SecretData) -> None:
        """Prove ``new`` works at the target; raise :class:`TransientError` while it propagates."""

    def finalize(self, ctx: RotationContext[OptionsT], old: SecretData, new: SecretData) -> None:
        """Revoke ``old`` after the grace period. An already revoked credential is success."""

    def preflight(self, ctx: RotationContext[OptionsT]) -> None:
        """Optional: check, without changing anything, that a rotation of ``ctx.current`` could
        run now (the admin credential works, the account exists, the grants are there).

        Used by dry runs (``rotate --dry-run``). Return when all is well; raise
        :class:`PermanentError` saying what is missing and what to grant or fix, or
        :class:`TransientError` when the target cannot be reached. Never mint, apply or revoke.
        """

    def in_use(self, ctx: RotationContext[OptionsT], old: SecretData) -> Usage | None:
        """Optional: who still authenticates with ``old``, asked before :meth:`finalize`.

        Return a :class:`Usage` (``sessions=0`` when nobody does) or ``None`` when the target
        cannot tell this time. Overriding it makes finalize wait while the old credential is in
        use (the routing file's ``wait_until_unused``, ``finalize_wait_max``,
        ``when_still_used``): the run stays in grace and is checked again later. Read only;
        raise :class:`TransientError` when the target cannot be reached.
        """
        return None

    def discard(self, ctx: RotationContext[OptionsT], new: SecretData) -> None:
        """Revoke a minted credential that will never be stored (abandoned or rolled back);
        only the *new* one: the old credential is what every consumer still uses.

        Optional, and called only when ``can_discard`` is True. An issuer that cannot revoke
        ``new`` (it can no longer be withdrawn at the target) raises :class:`PermanentError`
        saying so, so that nobody reports it revoked (``rollback``).
        """


def host_target(host: str, port: int) -> str:
    """A server as a :meth:`Rotator.target` name: ``host:port`` (``[::1]:5432`` for an IPv6
    address), so every rule rotating on one server shares its concurrency budget."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
