"""Who is calling and what they may do: bearer tokens, policies and bindings, as ScaiVault does."""

from __future__ import annotations

import hmac

from orchestrator.local.emulator.errors import ApiError
from orchestrator.local.emulator.pattern import glob_match
from orchestrator.local.emulator.state import State

ADMIN = "admin"


def authenticate(state: State, admin_token: str, authorization: str | None) -> str:
    """The identity behind the ``Authorization: Bearer`` header, or 401."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError("authentication_required", "send Authorization: Bearer <token>")
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    issued = state.tokens.get(token)
    if issued is None:
        raise ApiError("authentication_required", "unknown token")
    if issued.expires_at is not None and state.now() >= issued.expires_at:
        raise ApiError("token_expired", "the token has expired; get a new one")
    return issued.identity


def allowed(state: State, identity: str, permission: str, path: str) -> bool:
    """True when a policy bound to ``identity`` grants ``permission`` on ``path``."""
    if identity == ADMIN:
        return True
    for policy in state.policies.values():
        if not any(b.identity_id == identity for b in policy.bindings):
            continue
        for rule in policy.rules:
            granted = permission in rule.permissions or "*" in rule.permissions
            if granted and glob_match(rule.path_pattern, path):
                return True
    return False


def authorize(state: State, identity: str, permission: str, path: str) -> None:
    """Raise 403 ``access_denied`` naming the path and permission unless it is granted."""
    if not allowed(state, identity, permission, path):
        raise ApiError(
            "access_denied",
            f"{identity} has no {permission!r} permission on {path!r}",
        )


def require_admin(identity: str) -> None:
    """Raise 403 unless the caller used the admin token."""
    if identity != ADMIN:
        raise ApiError("access_denied", f"{identity} is not an admin; this needs the admin token")
