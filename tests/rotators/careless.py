"""A test-only rotator written carelessly, for the leak tests: the engine must contain it.

``test-careless`` (vault-only) logs its minted data at DEBUG (whole, as a nested dict, inside a
list) and then fails ``verify`` with a ``ValueError`` whose text holds both the old and the new
value, as a naive plugin or a client library might. Nothing of that may reach a log line, the
run record, history, metrics or an alert.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from rotators import RotationContext, Rotator, SecretData


class CarelessOptions(BaseModel):
    """Routing-file options of ``test-careless``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = "password"


class CarelessRotator(Rotator):
    """Mints a new value, logs it carelessly, and fails verify with the values in the text."""

    name = "test-careless"
    strategy = "vault-only"
    Options: ClassVar[type[BaseModel]] = CarelessOptions

    def mint(self, ctx: RotationContext) -> dict[str, Any]:
        field = str(getattr(ctx.options, "field", "password"))
        data = dict(ctx.current.data)
        data[field] = "CARELESSNEW" + secrets.token_hex(8)
        ctx.log.debug("careless_minted", new=data, copy={"password": data[field]}, all=[data])
        return data

    def verify(self, ctx: RotationContext, new: SecretData) -> None:
        field = str(getattr(ctx.options, "field", "password"))
        old = ctx.current.data[field]
        raise ValueError(f"login refused for {new[field]!r} (the old one was {old!r})")

    def finalize(self, ctx: RotationContext, old: SecretData, new: SecretData) -> None:
        return None
