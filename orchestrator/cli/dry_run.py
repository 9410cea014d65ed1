"""``rotate --dry-run``: what a rotation of each path would do and whether it could run now,
changing nothing (no run record, no ledger entry, no message, no ScaiVault write).

Per path: its rule, rotator, strategy, target and budget, grace period, current version, an
active rotation if any, and read-only probes: the admin secret readable (``admin_secret_path``),
the target reachable (a TCP connect to the options' ``host`` and ``port``, or a target named
``host:port``), and the rotator's own
:meth:`~rotators.Rotator.preflight`. The rotator runs here, so its plugin must be installed on
this machine; where it is not, the preflight is reported as not checked (not as a failure).
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.duration import format_duration
from orchestrator.errors import OrchestratorError, reason_of
from orchestrator.log import get_logger
from rotators.contract import RotationContext
from rotators.errors import RotatorError

if TYPE_CHECKING:
    from orchestrator.cli.session import OnCall
    from orchestrator.routing import RoutingTable, Rule
    from rotators.contract import Rotator, SecretVersion

#: Seconds a reachability probe waits for the target's TCP handshake.
CONNECT_TIMEOUT = 3.0
#: What a probe found: it passed, it failed (the rotation would fail), or it did not apply.
OK, FAILED, SKIPPED = "ok", "failed", "n/a"


@dataclass(frozen=True)
class Probe:
    """One read-only check: its name, ``ok``/``failed``/``n/a``, and what it found."""

    name: str
    result: str
    detail: str = ""


@dataclass
class PathPlan:
    """What a rotation of ``path`` would be, and why it would fail (``problems``)."""

    path: str
    rule: str | None = None
    rotator: str | None = None
    strategy: str | None = None
    target: str | None = None
    grace_period: str | None = None
    current_version: int | None = None
    active: str | None = None
    probes: list[Probe] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def would_fail(self) -> bool:
        return bool(self.problems)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["would_fail"] = self.would_fail
        return data


class DryRun:
    """Plans paths on one on-call session; loads the plugins once, on first need."""

    def __init__(self, oc: OnCall, grace: str | None) -> None:
        self.oc = oc
        self.grace = grace
        self._table: RoutingTable | None = None
        self._why_not: str | None = None

    def plan(self, path: str, *, busy_fails: bool = True) -> PathPlan:
        """``path``'s plan; an active rotation counts as a problem when ``busy_fails``."""
        found = PathPlan(path)
        rule = self.oc.routing.match(path)
        if rule is None:
            found.problems.append(
                f"no routing rule matches it in {self.oc.settings.rotator_config}"
            )
            return found
        self._describe(found, rule)
        active = self.oc.store.active(path)
        if active is not None:
            found.active = f"{active.rotation_id} is {active.state}"
            if busy_fails:
                found.problems.append(f"a rotation is already active: {found.active}")
        current = self._read(found)
        if current is not None:
            self._probe(found, rule, current)
        return found

    def _describe(self, found: PathPlan, rule: Rule) -> None:
        found.rule = f"rule {self.oc.routing.number(rule)} ({rule.match!r})"
        found.rotator = rule.rotator
        found.target = rule.target.describe()
        default = self.oc.settings.rotator_default_grace
        rule_grace = format_duration(rule.grace_period) if rule.grace_period else default
        found.grace_period = self.grace or rule_grace

    def _read(self, found: PathPlan) -> SecretVersion | None:
        try:
            current = self.oc.vault.read(found.path)
        except (OrchestratorError, RotatorError) as exc:
            found.problems.append(f"cannot read the secret: {reason_of(exc)}")
            return None
        found.current_version = current.version
        return current

    def _probe(self, found: PathPlan, rule: Rule, current: SecretVersion) -> None:
        loaded = self._loaded_rule(found.path)
        options = loaded.options if loaded is not None else rule.options
        found.probes.append(self._admin_probe(options))
        rotator = self._rotator(loaded)
        found.strategy = rotator.strategy if rotator is not None else None
        if loaded is not None and rotator is not None:
            found.target = loaded.target.describe()  # with the rotator's default target
        found.probes.append(_reach_probe(_address(options, found.target)))
        found.probes.append(self._preflight(rotator, loaded, current))
        for probe in found.probes:
            if probe.result == FAILED:
                found.problems.append(f"{probe.name}: {probe.detail}")

    def _admin_probe(self, options: Any) -> Probe:
        admin = getattr(options, "admin_secret_path", None)
        if not admin:
            return Probe("admin secret readable", SKIPPED, "the rule names no admin_secret_path")
        try:
            self.oc.vault.read(str(admin))
        except (OrchestratorError, RotatorError) as exc:
            return Probe("admin secret readable", FAILED, f"{admin}: {reason_of(exc)}")
        return Probe("admin secret readable", OK, str(admin))

    def _preflight(
        self, rotator: Rotator | None, rule: Rule | None, current: SecretVersion
    ) -> Probe:
        name = "rotator preflight"
        if rotator is None or rule is None:
            return Probe(name, SKIPPED, f"not checked here: {self._why_not}")
        if not rotator.has_preflight:
            return Probe(name, SKIPPED, f"{rotator.name} has no preflight")
        ctx: RotationContext[Any] = RotationContext(
            path=current.path, rotation_id="dry-run", current=current, options=rule.options,
            log=get_logger("dry_run", path=current.path, rotator=rotator.name),
            vault=_Reader(self.oc),
        )  # fmt: skip
        try:
            rotator.preflight(ctx)
        except Exception as exc:  # any rotator error: named, never its foreign text
            return Probe(name, FAILED, reason_of(exc, "preflight"))
        return Probe(name, OK, "passed")

    def _loaded_rule(self, path: str) -> Rule | None:
        table = self._plugins()
        return table.match(path) if table is not None else None

    def _rotator(self, rule: Rule | None) -> Rotator | None:
        table = self._plugins()
        if table is None or rule is None:
            return None
        return table.rotator_for(rule)

    def _plugins(self) -> RoutingTable | None:
        """The routing file with its plugins loaded and options validated (None: not here)."""
        if self._table is None and self._why_not is None:
            from orchestrator.errors import ConfigError
            from orchestrator.routing import RoutingTable

            try:
                self._table = RoutingTable.load(self.oc.settings.rotator_config)
            except ConfigError as exc:
                problems = getattr(exc, "problems", None) or [str(exc)]
                self._why_not = f"the routing file's plugins do not load here ({problems[0]})"
        return self._table


class _Reader:
    """The read-only ScaiVault reader a preflight gets (on-call's token)."""

    def __init__(self, oc: OnCall) -> None:
        self._oc = oc

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        return self._oc.vault.read(path, version)


def _address(options: Any, target: str | None) -> tuple[str, int] | None:
    """Where the target listens: the options' ``host`` and ``port`` (the built-in rotators'
    names), else a target named ``host:port``; None when neither says."""
    host, port = getattr(options, "host", None), getattr(options, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    name, _, number = (target or "").split(" ", 1)[0].rpartition(":")
    if name and number.isdigit() and "/" not in name:
        return name.strip("[]"), int(number)
    return None


def _reach_probe(address: tuple[str, int] | None) -> Probe:
    """A TCP connect to the target's address."""
    name = "target reachable"
    if address is None:
        return Probe(name, SKIPPED, "no host and port to connect to (the preflight checks it)")
    host, port = address
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        return Probe(name, FAILED, f"{host}:{port}: {type(exc).__name__}")
    return Probe(name, OK, f"{host}:{port} accepts connections")


def render(plans: list[PathPlan]) -> str:
    """The plans for people: one block per path, then a verdict."""
    lines: list[str] = []
    for item in plans:
        verdict = "WOULD FAIL" if item.would_fail else "ready"
        lines.append(f"{item.path}: {verdict}")
        for label, value in (
            ("rule", item.rule), ("rotator", item.rotator), ("strategy", item.strategy),
            ("target", item.target), ("grace period", item.grace_period),
            ("current version", item.current_version), ("active rotation", item.active or "none"),
        ):  # fmt: skip
            lines.append(f"  {label + ':':<17}{'-' if value is None else value}")
        for probe in item.probes:
            lines.append(f"  {probe.name + ':':<25}{probe.result} {probe.detail}".rstrip())
        lines += [f"  problem: {problem}" for problem in item.problems]
    failing = sum(item.would_fail for item in plans)
    lines.append(f"dry run: {len(plans) - failing} of {len(plans)} ready; nothing was changed")
    return "\n".join(lines)
