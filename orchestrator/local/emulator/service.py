"""The emulated ScaiVault: secrets, access, subscriptions, rotation and audit, without HTTP.

Everything runs on the server's event loop, so no locks are needed. With a state file, each
mutation marks the state changed, and :meth:`VaultService.persist` (awaited before a request that
changed something is answered) writes it from a worker thread, so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.duration import parse_duration
from orchestrator.local.emulator.access import ADMIN, allowed, authenticate, authorize
from orchestrator.local.emulator.audit import AuditTrail
from orchestrator.local.emulator.delivery import Dispatcher
from orchestrator.local.emulator.errors import ApiError, invalid, not_found
from orchestrator.local.emulator.schema import (
    PolicyBody,
    PutSecret,
    RotationPolicyBody,
    SubscriptionBody,
)
from orchestrator.local.emulator.state import (
    Binding,
    Policy,
    RotationPolicy,
    Rule,
    SecretRecord,
    State,
    StateWriter,
    Subscription,
    Token,
    Version,
    load_state,
)
from orchestrator.log import get_logger

log = get_logger("orchestrator.local.emulator")

MAX_CLOCK_OFFSET = timedelta(days=365_000)
RESERVED_LAST_SEGMENTS = ("versions", "rotate")
PASSWORD_ALPHABET = string.ascii_letters + string.digits
ROTATOR_METADATA = frozenset(
    {"rotation_id", "rotator", "previous_version", "finalize_after", "rotated_by"}
)


def check_path(path: str) -> str:
    """Refuse secret paths ScaiVault would refuse: empty segments, ``..``, reserved suffixes."""
    segments = path.split("/")
    if not path or len(path) > 512 or any(s in ("", ".", "..") for s in segments):
        raise invalid("path: use non-empty segments separated by single slashes, without '..'")
    if segments[-1] in RESERVED_LAST_SEGMENTS:
        raise invalid(f"path: the last segment may not be {segments[-1]!r}")
    return path


class VaultService:
    """The emulator's behaviour; the HTTP layer only parses, authenticates and serializes."""

    def __init__(
        self,
        admin_token: str,
        state_file: Path | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.admin_token = admin_token
        self.state_file = state_file
        self.state = load_state(state_file)
        self.writer = StateWriter(state_file) if state_file is not None else None
        self.dispatcher = dispatcher or Dispatcher()
        self.dispatcher.gate = self.persist
        self.trail = AuditTrail()
        self._changes = 0
        self._saved = 0
        self._flush: asyncio.Task[None] | None = None

    # --- housekeeping -------------------------------------------------------------------

    def changed(self) -> None:
        """Note a change of the state; the next :meth:`persist` writes it (no-op without a file)."""
        if self.writer is not None:
            self._changes += 1

    async def persist(self) -> None:
        """Return once every change noted so far is in the state file.

        One write runs at a time and carries every change made before it started, so writes
        land in order and concurrent callers share them. A caller that is cancelled does not
        cancel the write: another request may be waiting on it.
        """
        target = self._changes
        while self._saved < target:
            if self._flush is None or self._flush.done():
                self._flush = asyncio.get_running_loop().create_task(self._write())
            await asyncio.shield(self._flush)

    async def _write(self) -> None:
        assert self.writer is not None
        generation = self._changes
        content = self.writer.render(self.state)  # on the loop: a consistent snapshot
        await asyncio.to_thread(self.writer.write, content)
        self._saved = generation

    def reset(self) -> None:
        """Forget everything: secrets, tokens, policies, subscriptions, clock, audit, events."""
        self.state = State()
        if self.writer is not None:
            self.writer.forget()
        self.trail.clear()
        self.dispatcher.clear()
        self.changed()

    def identity(self, authorization: str | None) -> str:
        """Authenticate the caller (401 otherwise)."""
        return authenticate(self.state, self.admin_token, authorization)

    def audit(self, identity: str, action: str, path: str, outcome: str, **extra: Any) -> None:
        """Record one access (allowed or not) with who and when (on the emulator clock)."""
        self.trail.record(self.state.now(), identity, action, path, outcome, **extra)

    def guard(self, identity: str, permission: str, path: str) -> None:
        """Authorize, auditing a denial before raising it."""
        try:
            authorize(self.state, identity, permission, path)
        except ApiError:
            self.audit(identity, permission, path, "denied")
            raise

    # --- secrets ------------------------------------------------------------------------

    def read(self, identity: str, path: str, version: int | None) -> Version:
        """The current (or the given) version of ``path``."""
        self.guard(identity, "read", path)
        record = self.state.secrets.get(path)
        found = None
        if record is not None:
            found = record.current if version is None else record.find(version)
        if found is None:
            self.audit(identity, "read", path, "not_found", version=version)
            if record is None:
                raise not_found(f"secret {path!r} not found")
            raise not_found(f"version {version} of {path!r} not found (never written or pruned)")
        self.audit(identity, "read", path, "ok", version=found.version)
        return found

    def versions(self, identity: str, path: str) -> SecretRecord:
        """The record of ``path`` with every retained version."""
        self.guard(identity, "read", path)
        record = self.state.secrets.get(path)
        if record is None:
            self.audit(identity, "versions", path, "not_found")
            raise not_found(f"secret {path!r} not found")
        self.audit(identity, "versions", path, "ok")
        return record

    def write(self, identity: str, path: str, body: PutSecret) -> tuple[Version, bool]:
        """Store a new version (honouring ``options.cas``); return it and whether it is new."""
        check_path(path)
        self.guard(identity, "write", path)
        record = self.state.secrets.get(path)
        current = record.current.version if record else 0
        cas = body.options.cas
        if cas is not None and cas != current:
            self.audit(identity, "write", path, "version_conflict", cas=cas)
            raise ApiError(
                "version_conflict",
                f"cas {cas} does not match current version {current} of {path!r}",
            )
        version = self.store(
            path, body.data, body.secret_type, body.metadata, identity, body.options.max_versions
        )
        self.audit(identity, "write", path, "ok", version=version.version)
        self.publish("secret.updated", path, {"version": version.version})
        self.changed()
        return version, record is None

    def store(
        self,
        path: str,
        data: dict[str, Any],
        secret_type: str,
        metadata: dict[str, Any],
        identity: str,
        max_versions: int | None = None,
    ) -> Version:
        """Append a version to ``path`` (creating it), pruning beyond ``max_versions``."""
        record = self.state.secrets.setdefault(path, SecretRecord(path=path))
        if max_versions is not None:
            record.max_versions = max_versions
        number = record.current.version + 1 if record.versions else 1
        version = Version(
            version=number,
            data=data,
            secret_type=secret_type,
            metadata=metadata,
            created_at=self.state.now(),
            created_by=identity,
        )
        record.add(version)
        return version

    def listing(self, identity: str, prefix: str) -> list[SecretRecord]:
        """Secrets under ``prefix`` that the caller may list."""
        found = [
            record
            for path, record in sorted(self.state.secrets.items())
            if path.startswith(prefix) and allowed(self.state, identity, "list", path)
        ]
        self.audit(identity, "list", prefix, "ok", count=len(found))
        return found

    # --- access -------------------------------------------------------------------------

    def issue_token(self, identity: str, ttl: str | None) -> tuple[str, Token]:
        """A new bearer token for ``identity`` (expiring on the emulator clock)."""
        expires = None if ttl is None else self.state.now() + parse_duration(ttl)
        token = "svt_" + secrets.token_urlsafe(24)
        issued = Token(identity=identity, expires_at=expires)
        self.state.tokens[token] = issued
        self.changed()
        return token, issued

    def create_policy(self, body: PolicyBody) -> Policy:
        policy = Policy(
            id="pol_" + secrets.token_hex(6),
            name=body.name,
            description=body.description,
            rules=[
                Rule(path_pattern=r.path_pattern, permissions=list(r.permissions))
                for r in body.rules
            ],
        )
        self.state.policies[policy.id] = policy
        self.changed()
        return policy

    def bind(self, policy_id: str, identity_type: str, identity_id: str) -> Policy:
        policy = self.state.policies.get(policy_id)
        if policy is None:
            raise not_found(f"policy {policy_id!r} not found")
        binding = Binding(identity_type=identity_type, identity_id=identity_id)
        if binding not in policy.bindings:
            policy.bindings.append(binding)
        self.changed()
        return policy

    # --- subscriptions and events -------------------------------------------------------

    def subscribe(self, body: SubscriptionBody) -> Subscription:
        subscription = Subscription(
            id="sub_" + secrets.token_hex(6),
            name=body.name,
            paths=list(body.paths),
            events=list(body.events),
            url=body.delivery.url,
            secret=body.delivery.secret,
            created_at=self.state.now(),
        )
        self.state.subscriptions[subscription.id] = subscription
        self.changed()
        return subscription

    def unsubscribe(self, subscription_id: str) -> None:
        if self.state.subscriptions.pop(subscription_id, None) is None:
            raise not_found(f"subscription {subscription_id!r} not found")
        self.changed()

    def publish(self, event_type: str, path: str, data: dict[str, Any]) -> str:
        """Emit an event to matching subscriptions (delivered in the background)."""
        subscriptions = list(self.state.subscriptions.values())
        return self.dispatcher.publish(event_type, path, data, subscriptions)

    # --- rotation -----------------------------------------------------------------------

    def create_rotation_policy(self, body: RotationPolicyBody) -> RotationPolicy:
        if parse_duration(body.interval) <= timedelta(0):
            raise invalid("interval: must be longer than 0s")
        policy = RotationPolicy(
            id="rot_" + secrets.token_hex(6),
            name=body.name,
            interval=body.interval,
            grace_period=body.grace_period,
            auto_generate=body.auto_generate,
        )
        self.state.rotation_policies[policy.id] = policy
        self.changed()
        return policy

    def assign(self, policy_id: str, path: str) -> RotationPolicy:
        """Put ``path`` on a rotation policy (off any other); first due one interval from now."""
        check_path(path)
        policy = self.state.rotation_policies.get(policy_id)
        if policy is None:
            raise not_found(f"rotation policy {policy_id!r} not found")
        for other in self.state.rotation_policies.values():
            other.next_due.pop(path, None)
        policy.next_due[path] = self.state.now() + parse_duration(policy.interval)
        self.changed()
        return policy

    def policy_of(self, path: str) -> RotationPolicy | None:
        """The rotation policy ``path`` is assigned to, if any."""
        return next((p for p in self.state.rotation_policies.values() if path in p.next_due), None)

    def rotate_now(self, identity: str, path: str) -> str | None:
        """``POST /v1/secrets/{path}/rotate``: fire rotation now (trigger ``manual``)."""
        self.guard(identity, "rotate", path)
        if path not in self.state.secrets:
            raise not_found(f"secret {path!r} not found")
        self.audit(identity, "rotate", path, "ok")
        event_id = self.fire(path, self.policy_of(path), "manual")
        self.changed()
        return event_id

    def check_due(self) -> int:
        """Fire every rotation whose due time has passed on the emulator clock; return how many."""
        now = self.state.now()
        fired = 0
        for policy in list(self.state.rotation_policies.values()):
            for path, due in list(policy.next_due.items()):
                if due <= now:
                    self.fire(path, policy, "schedule")
                    fired += 1
        if fired:
            self.changed()
        return fired

    def fire(self, path: str, policy: RotationPolicy | None, trigger: str) -> str | None:
        """Rotate ``path`` once: emit ``rotation.due``, or with ``auto_generate`` write a new
        random password version and emit ``secret.rotated``. Re-arms the schedule."""
        if policy is not None:
            # Re-armed from now, so one due period gives exactly one event whatever the tick.
            policy.next_due[path] = self.state.now() + parse_duration(policy.interval)
        record = self.state.secrets.get(path)
        if record is None:
            log.info("rotation_skipped", path=path, reason="secret does not exist")
            return None
        data: dict[str, Any] = {
            "version": record.current.version,
            "policy_id": policy.id if policy else None,
            "grace_period": policy.grace_period if policy else None,
            "trigger": trigger,
        }
        if policy is None or not policy.auto_generate:
            log.info("rotation_due", path=path, trigger=trigger, version=data["version"])
            return self.publish("rotation.due", path, data)
        return self.publish("secret.rotated", path, {**data, **self._generate(record, policy)})

    def _generate(self, record: SecretRecord, policy: RotationPolicy) -> dict[str, Any]:
        old = record.current
        fresh = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(32))
        key = "password" if "password" in old.data or "value" not in old.data else "value"
        # Keep the owner's metadata (description, tags), not a rotator's bookkeeping of the
        # previous version: a reconcile job reading finalize_after must not see a stale one.
        kept = {k: v for k, v in old.metadata.items() if k not in ROTATOR_METADATA}
        metadata = {
            **kept,
            "rotated_by": "scaivault",
            "rotation_policy": policy.id,
            "previous_version": old.version,
        }
        new = self.store(record.path, {**old.data, key: fresh}, old.secret_type, metadata, ADMIN)
        log.info("rotation_generated", path=record.path, new_version=new.version)
        return {"version": new.version, "previous_version": old.version}

    # --- clock and audit ----------------------------------------------------------------

    def advance(self, delta: timedelta) -> datetime:
        """Move the emulator clock forward and fire what became due."""
        offset = self.state.clock_offset + delta.total_seconds()
        if offset > MAX_CLOCK_OFFSET.total_seconds():
            raise invalid("advance: the emulator clock cannot run more than 1000 years ahead")
        self.state.clock_offset = offset
        self.changed()
        self.check_due()
        return self.state.now()

    def audit_entries(
        self, identity: str, path: str | None, who: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Audit entries (newest last), filtered by path and identity."""
        if path is not None:
            self.guard(identity, "audit", path)
        elif identity != ADMIN:
            raise ApiError("access_denied", f"{identity} needs ?path= to read the audit trail")
        return self.trail.query(path, who, limit)
