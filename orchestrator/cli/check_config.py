"""``check-config``: every problem with settings, routing, Redis and ScaiVault, found in one go.

Each check adds problems instead of stopping at the first, so an operator fixes everything in
one round. Configuration problems (settings, routing file, plugins) make the exit code 2;
reachability and permission problems alone make it 1.

Nothing is written to ScaiVault unless the operator asks for the write probe
(``--probe-write``): a PUT of a secret's current data with a ``cas`` that can never match.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from orchestrator import connection
from orchestrator.cli.output import EXIT_FAILED, EXIT_USAGE, safe_url
from orchestrator.cli.session import CLI_RETRY_DEADLINE, require_named_redis
from orchestrator.errors import (
    AccessDenied,
    CommandError,
    ConfigError,
    NotFound,
    VaultError,
    VersionConflict,
)
from orchestrator.routing import RoutingTable, Rule, literal_prefix
from orchestrator.settings import Settings
from orchestrator.state.workers import ROLES, WorkerRegistry
from orchestrator.vault.client import VaultClient


@dataclass
class Report:
    """What ``check-config`` found: problems (config or reachability) and what passed."""

    config_problems: list[str] = field(default_factory=list)
    reach_problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.config_problems + self.reach_problems

    @property
    def exit_code(self) -> int:
        if self.config_problems:
            return EXIT_USAGE
        return EXIT_FAILED if self.reach_problems else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "warnings": self.warnings,
            "passed": self.passed,
            "next": self.next_step(),
        }

    def next_step(self) -> str:
        """What to do after reading the report."""
        if self.config_problems:
            return "fix each PROBLEM line above (file, rule, field), then run check-config again"
        if self.reach_problems:
            return "make Redis and ScaiVault reachable and grant what is missing, then run again"
        if self.warnings:
            return "look at each WARNING line: none stops a rotation, each may hide one"
        return (
            "nothing to do: running workers reload this routing file when it changes (or on "
            "SIGHUP); start workers and beat if none is running"
        )

    def render(self) -> str:
        lines = [f"ok       {text}" for text in self.passed]
        lines += [f"WARNING  {text}" for text in self.warnings]
        lines += [f"PROBLEM  {text}" for text in self.problems]
        verdict = f"{len(self.problems)} problem(s)" if self.problems else "configuration is OK"
        if self.warnings:
            verdict += f", {len(self.warnings)} warning(s)"
        return "\n".join([*lines, verdict, f"next: {self.next_step()}"])


def check(*, probe_write: bool = False) -> Report:
    """Run every check; never raises for a problem it can describe.

    ``probe_write`` also tests the token's write permission with a write that cannot succeed.
    """
    report = Report()
    try:
        settings = Settings.load()
    except ConfigError as exc:
        report.config_problems += exc.problems
        return report
    report.passed.append("settings: environment variables are valid")
    table = _check_routing(settings, report)
    _check_redis(settings, report)
    _check_vault(settings, table, report, probe_write)
    return report


def _check_routing(settings: Settings, report: Report) -> RoutingTable | None:
    """Validate the routing file; the valid rules are checked further even when others are
    not (each problem is its own line)."""
    table, problems = RoutingTable.check(settings.rotator_config)
    report.config_problems += problems
    for rule in table.rules:
        number = table.number(rule)
        rotator = table.rotator_for(rule)
        report.passed.append(
            f"rule {number}: {rule.match!r} -> {rule.rotator} ({rotator.strategy}), options valid"
        )
        if rotator.capabilities.in_place and not settings.seal_keys():
            report.config_problems.append(
                f"rule {number}: rotator {rule.rotator} is an updater and ROTATOR_SEAL_KEY is not "
                "set; workers refuse to run it (make a key with Fernet.generate_key())"
            )
    if not table.rules and not problems:
        report.config_problems.append(f"{settings.rotator_config}: has no [[rules]]")
    return table if table.rules else None


def _check_redis(settings: Settings, report: Report) -> None:
    url = safe_url(settings.redis_url)
    try:
        require_named_redis(settings)
    except CommandError as refused:
        report.config_problems.append(f"{refused.message}; {refused.hint}")
        return
    try:
        client = connection.redis_client(
            settings.redis_url,
            master=settings.redis_sentinel_master,
            socket_connect_timeout=3,
            socket_timeout=5,
        )
        with contextlib.closing(client):
            client.ping()
            report.passed.append(f"Redis at {url} answers")
            _check_processes(settings, client, report)
    except (redis.RedisError, ValueError) as exc:
        report.reach_problems.append(
            f"Redis at {url} is unreachable ({type(exc).__name__}); start it or fix REDIS_URL"
        )


def _check_processes(settings: Settings, client: redis.Redis, report: Report) -> None:
    """Which workers and beat are alive (heartbeats in Redis) and which routing file each runs:
    one that runs another content than the file here has not loaded it (yet)."""
    from orchestrator.worker.heartbeat import TTL_INTERVALS

    ttl = TTL_INTERVALS * settings.rotator_heartbeat_interval
    live = WorkerRegistry(client, ttl).live()
    here = _sha256(settings.rotator_config)
    for role in ROLES:
        if not any(entry.process.role == role for entry in live):
            report.warnings.append(
                f"no {role} has sent a heartbeat in the last {ttl:.0f}s: is one running against "
                "this Redis? (`scaivault-rotator health` on its host says why not)"
            )
    for entry in live:
        who = f"{entry.process.role} {entry.process.hostname}:{entry.process.pid}"
        beat = f"last heartbeat {entry.age_seconds:.0f}s ago"
        routing = entry.routing
        if routing is None or entry.process.role != "worker":
            report.passed.append(f"{who}: alive ({beat})")
            continue
        runs = f"runs {routing.path} (sha256 {routing.sha256[:12]}, loaded {routing.loaded_at})"
        if here is not None and routing.sha256 != here:
            report.warnings.append(
                f"{who} {runs}, not this routing file's content (sha256 {here[:12]}): it has "
                f"not loaded it (invalid there, or another file?); its log says why ({beat})"
            )
        else:
            report.passed.append(f"{who}: alive, {runs} ({beat})")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _check_vault(
    settings: Settings, table: RoutingTable | None, report: Report, probe_write: bool
) -> None:
    try:
        settings.require_vault()
        settings.read_token()
    except ConfigError as exc:
        report.config_problems += exc.problems
        return
    if table is None:
        return
    deadline = min(settings.scaivault_retry_deadline, CLI_RETRY_DEADLINE)
    quick = settings.model_copy(update={"scaivault_retry_deadline": deadline})
    with VaultClient(quick) as vault:
        for rule in table.rules:
            number = table.number(rule)
            try:
                _check_rule_access(vault, table, number, rule, report, probe_write)
                _check_option_paths(vault, number, rule, report)
            except VaultError as exc:
                report.reach_problems.append(f"rule {number} ({rule.match!r}): {exc.message}")
                if exc.code in {"service_unavailable", "authentication_required", "token_expired"}:
                    return  # the same answer for every rule: say it once


def _check_option_paths(vault: VaultClient, number: int, rule: Rule, report: Report) -> None:
    """Options naming another ScaiVault secret (``*_secret_path``) must be readable."""
    for name, value in rule.options.model_dump().items():
        if not (name.endswith("_secret_path") and isinstance(value, str)):
            continue
        label = f"rule {number} option {name}"
        try:
            vault.read(value)
        except (AccessDenied, NotFound) as exc:
            report.reach_problems.append(f"{label}: cannot read {value!r}: {exc.message}")
        else:
            report.passed.append(f"{label}: the token may read {value!r}")


def _check_rule_access(
    vault: VaultClient,
    table: RoutingTable,
    number: int,
    rule: Rule,
    report: Report,
    probe_write: bool,
) -> None:
    prefix = literal_prefix(rule.match)
    label = f"rule {number} ({rule.match!r})"
    try:
        paths = vault.list(prefix)
    except AccessDenied as exc:
        report.reach_problems.append(f"{label}: the token may not list {prefix!r}: {exc.message}")
        return
    matching = [path for path in paths if table.match(path) is rule]
    unrouted = [path for path in paths if table.match(path) is None]
    for path in unrouted[:5]:
        report.warnings.append(
            f"{label}: {path!r} is under {prefix!r} but no rule matches it, so it is never "
            "rotated (was a wildcard dropped?)"
        )
    if len(unrouted) > 5:
        report.warnings.append(f"{label}: and {len(unrouted) - 5} more unrouted under {prefix!r}")
    if not matching:
        report.warnings.append(
            f"{label}: no secret this token may list matches this rule (a typo in match?)"
        )
        return
    _check_path_access(vault, matching[0], label, report, probe_write)


def _check_path_access(
    vault: VaultClient, path: str, label: str, report: Report, probe_write: bool
) -> None:
    try:
        current = vault.read(path)
    except AccessDenied as exc:
        report.reach_problems.append(f"{label}: the token may not read {path!r}: {exc.message}")
        return
    except NotFound:
        return
    if not probe_write:
        report.passed.append(
            f"{label}: the token may read {path!r} (write not tested; --probe-write tests it)"
        )
        return
    try:
        # A write whose cas can never match: allowed -> version_conflict, not allowed ->
        # access_denied. Nothing is written either way.
        vault.write(path, current.data, cas=current.version + 1_000_000)
    except VersionConflict:
        report.passed.append(f"{label}: the token may read and write {path!r}")
    except AccessDenied as exc:
        report.reach_problems.append(f"{label}: the token may not write {path!r}: {exc.message}")
    else:
        report.reach_problems.append(
            f"{label}: ScaiVault accepted a write with a wrong cas on {path!r}; it must refuse "
            "those (409 version_conflict), or rotations can overwrite concurrent changes"
        )
