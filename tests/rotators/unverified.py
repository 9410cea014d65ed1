"""A test-only rotator that keeps the default ``verify()``: loading it logs ``plugin_warning``."""

from __future__ import annotations

import secrets
from typing import Any

from rotators import RotationContext, Rotator


class UnverifiedRotator(Rotator):
    """Vault-only: writes a fresh password and proves nothing about it."""

    name = "test-unverified"
    strategy = "vault-only"

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        return {**ctx.current.data, "password": secrets.token_urlsafe(16)}
