"""The plugin's own test suite: the scaivault-rotator conformance kit against its rotator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from example_token_rotator import ExampleTokenRotator

from rotators.testing import Conformance, Scenario


class TokenFormat:
    """The target adapter: vault-only, so "valid" means "a token of the configured format"."""

    def setup(self) -> Scenario:
        return Scenario(
            data={"service": "billing", "token": "ex_" + "0" * 48},
            options={"prefix": "ex_", "nbytes": 24},
            public_fields=frozenset({"service"}),
        )

    def is_valid(self, data: Mapping[str, Any]) -> bool:
        token = data.get("token")
        return isinstance(token, str) and token.startswith("ex_") and len(token) == 51


def test_example_token_conforms() -> None:
    Conformance(ExampleTokenRotator, TokenFormat()).run()
