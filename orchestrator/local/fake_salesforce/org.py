"""The fake org's state and rules: apps, consumers, staged credentials, tokens, faults.

Pure logic with no HTTP: :mod:`orchestrator.local.fake_salesforce.server` maps requests onto these
methods and :class:`~orchestrator.local.fake_salesforce.errors.ApiError` onto Salesforce-shaped
error bodies; the records it holds are in :mod:`orchestrator.local.fake_salesforce.records`. One
lock guards everything; the state can be saved to and loaded from a JSON file so the fake
survives a restart.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.local.fake_salesforce.errors import FAULT_KINDS, ApiError
from orchestrator.local.fake_salesforce.records import (
    App,
    Consumer,
    Fault,
    Pair,
    Staged,
    Token,
    iso,
    new_id,
    new_key,
    new_secret,
)

STAGED_LIFETIME = 30 * 86400.0
DEFAULT_API_MAX = 15000
ADMIN_PERMISSIONS = ("ExternalClientAppDeveloper", "ViewClientSecret")


class Org:
    """The whole fake org. Every public method takes the lock; callers hold no state."""

    def __init__(self, propagation_delay: float = 0.0, state_file: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, Token] = {}
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.propagation_delay = propagation_delay
        self.rest_secret_access = True
        self.api_max = DEFAULT_API_MAX
        self.api_used = 0
        self.clock_offset = 0.0
        self.org_id = "00D" + secrets.token_hex(6).upper()[:15]
        self.state_file = state_file
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # --- time, persistence -------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def _save(self) -> None:
        if self.state_file is None:
            return
        state = {
            "apps": [asdict(app) for app in self.apps.values()],
            "propagation_delay": self.propagation_delay,
            "rest_secret_access": self.rest_secret_access,
            "api_max": self.api_max,
            "api_used": self.api_used,
            "clock_offset": self.clock_offset,
            "org_id": self.org_id,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def _load(self, path: Path) -> None:
        state = json.loads(path.read_text(encoding="utf-8"))
        for raw in state["apps"]:
            consumers = {}
            for c in raw.pop("consumers").values():
                staged = c.pop("staged")
                consumer = Consumer(**{**c, "primary": Pair(**c["primary"])})
                if staged is not None:
                    consumer.staged = Staged(**{**staged, "pair": Pair(**staged["pair"])})
                consumers[consumer.id] = consumer
            self.apps[raw["id"]] = App(**raw, consumers=consumers)
        for name in ("propagation_delay", "rest_secret_access", "api_max", "api_used"):
            setattr(self, name, state[name])
        self.clock_offset = state["clock_offset"]
        self.org_id = state["org_id"]

    # --- admin (/_fake) ------------------------------------------------------------------

    def create_app(self, developer_name: str, label: str | None = None, kind: str = "eca") -> App:
        if kind not in {"eca", "connected_app"}:
            raise ApiError(400, "INVALID_INPUT", "kind must be eca or connected_app")
        with self.lock:
            app = App(new_id("0xI"), developer_name, label or developer_name, kind)
            self.apps[app.id] = app
            self._save()
            return app

    def create_consumer(
        self, app_id: str, name: str, permissions: list[str] | None = None
    ) -> Consumer:
        with self.lock:
            app = self._app(app_id, any_kind=True)
            now = self.now()
            pair = Pair(new_key(), new_secret(), now, now)
            consumer = Consumer(new_id("0Cs"), name, pair, list(permissions or []))
            app.consumers[consumer.id] = consumer
            self._save()
            return consumer

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for name in ("propagation_delay", "rest_secret_access", "api_max", "api_used"):
                if name in changes:
                    setattr(self, name, type(getattr(self, name))(changes[name]))
            self._save()
            return {
                "propagation_delay": self.propagation_delay,
                "rest_secret_access": self.rest_secret_access,
                "api_max": self.api_max,
                "api_used": self.api_used,
            }

    def add_fault(self, match: str, kind: str, count: int = 1, seconds: float = 0.0) -> None:
        if kind not in FAULT_KINDS and kind != "hang":
            raise ApiError(400, "INVALID_INPUT", f"unknown fault kind {kind!r}")
        with self.lock:
            self.faults.append(Fault(match, kind, count, seconds))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching ``METHOD path``, consuming one of its uses."""
        with self.lock:
            for fault in self.faults:
                want_method, _, glob = fault.match.partition(" ")
                if want_method not in {"*", method} or not fnmatch.fnmatchcase(path, glob):
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
            return None

    def expire_sessions(self) -> None:
        with self.lock:
            self.tokens.clear()

    def advance_clock(self, seconds: float) -> None:
        with self.lock:
            self.clock_offset += seconds
            self._save()

    def record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.requests.append({"method": method, "path": path, "status": status})

    def snapshot(self) -> dict[str, Any]:
        """State for tests and humans: ids, keys and states, never a secret."""
        with self.lock:
            return {
                "apps": [
                    {
                        "id": app.id,
                        "developer_name": app.developer_name,
                        "kind": app.kind,
                        "consumers": [
                            {
                                "id": c.id,
                                "name": c.name,
                                "key": c.primary.key,
                                "staged": None
                                if c.staged is None
                                else {
                                    "id": c.staged.id,
                                    "key": c.staged.pair.key,
                                    "state": self._state(c.staged),
                                },
                            }
                            for c in app.consumers.values()
                        ],
                    }
                    for app in self.apps.values()
                ],
                "api_used": self.api_used,
            }

    # --- OAuth ------------------------------------------------------------------------------

    def issue_token(self, grant_type: str | None, key: str | None, secret: str | None) -> str:
        if grant_type != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "grant type not supported", oauth=True)
        with self.lock:
            found = self._find_pair(key or "", secret or "")
            if found is None:
                raise ApiError(400, "invalid_client", "invalid client credentials", oauth=True)
            app, consumer = found
            token = f"{self.org_id}!{secrets.token_urlsafe(40)}"
            self.tokens[token] = Token(app.id, consumer.id, self.now())
            return token

    def revoke_token(self, token: str | None) -> None:
        with self.lock:
            if not token or self.tokens.pop(token, None) is None:
                raise ApiError(400, "invalid_token", "invalid token", oauth=True)

    def _find_pair(self, key: str, secret: str) -> tuple[App, Consumer] | None:
        now = self.now()
        for app in self.apps.values():
            for consumer in app.consumers.values():
                pairs = [consumer.primary]
                staged = consumer.staged
                if staged is not None and self._state(staged) in {"Active", "Rotated"}:
                    pairs.append(staged.pair)
                for pair in pairs:
                    if (
                        secrets.compare_digest(pair.key, key)
                        and secrets.compare_digest(pair.secret, secret)
                        and now >= pair.usable_at
                    ):
                        return app, consumer
        return None

    def authenticate(self, token: str | None) -> Token:
        with self.lock:
            found = self.tokens.get(token or "")
            if found is None:
                raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return found

    def count_api_call(self) -> None:
        with self.lock:
            if self.api_used >= self.api_max:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.api_used += 1

    # --- Connect REST: apps/oauth -------------------------------------------------------------

    def _caller_may_manage(self, token: Token) -> None:
        if not self.rest_secret_access:
            raise ApiError(
                403,
                "FUNCTIONALITY_NOT_ENABLED",
                "Access to External Client App consumer secrets via REST API is not currently "
                "enabled for this org.",
            )
        caller = self.apps[token.app_id].consumers.get(token.consumer_id)
        if caller is None or not set(ADMIN_PERMISSIONS) <= set(caller.permissions):
            raise ApiError(
                403,
                "INSUFFICIENT_ACCESS",
                "You don't have the External Client App Developer and View Client Secret "
                "permissions required for this resource.",
            )

    def _app(self, app_id: str, any_kind: bool = False) -> App:
        app = self.apps.get(app_id)
        if app is None or (app.kind != "eca" and not any_kind):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return app

    def _consumer(self, token: Token, app_id: str, consumer_id: str) -> Consumer:
        self._caller_may_manage(token)
        consumer = self._app(app_id).consumers.get(consumer_id)
        if consumer is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return consumer

    def _state(self, staged: Staged) -> str:
        return "Expired" if self.now() >= staged.expires else staged.state

    def usage(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"developerName": a.developer_name, "identifier": a.id, "label": a.label}
                for a in self.apps.values()
                if a.kind == "eca"
            ]

    def consumers(self, token: Token, app_id: str) -> list[Consumer]:
        with self.lock:
            self._caller_may_manage(token)
            return list(self._app(app_id).consumers.values())

    def consumer(self, token: Token, app_id: str, consumer_id: str) -> Consumer:
        with self.lock:
            return self._consumer(token, app_id, consumer_id)

    def staged_list(self, token: Token, app_id: str, consumer_id: str) -> list[Staged]:
        with self.lock:
            consumer = self._consumer(token, app_id, consumer_id)
            return [] if consumer.staged is None else [consumer.staged]

    def stage(self, token: Token, app_id: str, consumer_id: str) -> Staged:
        with self.lock:
            consumer = self._consumer(token, app_id, consumer_id)
            if consumer.staged is not None:
                raise ApiError(
                    400, "INVALID_INPUT", "A staged credential already exists for this consumer."
                )
            now = self.now()
            pair = Pair(new_key(), new_secret(), now, now + self.propagation_delay)
            consumer.staged = Staged(new_id("0Sc"), pair, "Active", now + STAGED_LIFETIME)
            self._save()
            return consumer.staged

    def staged_get(self, token: Token, app_id: str, consumer_id: str, staged_id: str) -> Staged:
        with self.lock:
            consumer = self._consumer(token, app_id, consumer_id)
            if consumer.staged is None or consumer.staged.id != staged_id:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            return consumer.staged

    def staged_command(
        self, token: Token, app_id: str, consumer_id: str, staged_id: str, command: Any
    ) -> Staged:
        with self.lock:
            staged = self.staged_get(token, app_id, consumer_id, staged_id)
            if command != "rotate":
                raise ApiError(400, "INVALID_INPUT", "command must be rotate")
            if self._state(staged) != "Active":
                raise ApiError(400, "INVALID_INPUT", "Only an Active staged credential rotates.")
            consumer = self._app(app_id).consumers[consumer_id]
            old, now = consumer.primary, self.now()
            consumer.primary = staged.pair
            consumer.staged = Staged(new_id("0Sc"), old, "Rotated", now + STAGED_LIFETIME)
            self._save()
            return consumer.staged

    def staged_delete(self, token: Token, app_id: str, consumer_id: str, staged_id: str) -> None:
        with self.lock:
            self.staged_get(token, app_id, consumer_id, staged_id)
            self._app(app_id).consumers[consumer_id].staged = None
            self._save()

    def staged_view(self, staged: Staged, url: str) -> dict[str, Any]:
        """The ``App Oauth Staged Credentials`` representation (includes the secret)."""
        return {
            "id": staged.id,
            "key": staged.pair.key,
            "secret": staged.pair.secret,
            "state": self._state(staged),
            "createdBy": "005000000000001AAA",
            "createdDate": iso(staged.pair.created),
            "expirationDate": iso(staged.expires),
            "stagedCredentialsUrl": url.rsplit("/", 1)[0] if url.endswith(staged.id) else url,
            "url": url if url.endswith(staged.id) else f"{url}/{staged.id}",
        }
