"""The plugin's own test suite: the scaivault-rotator conformance kit against the issuer, over
the fake key service (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from example_issuer import ApiKeyIssuer
from example_issuer.fake import FakeKeyService, KitTarget

from rotators.testing import Conformance


@pytest.fixture
def service() -> Iterator[FakeKeyService]:
    fake = FakeKeyService().start()
    yield fake
    fake.close()


@pytest.fixture
def target(service: FakeKeyService) -> Iterator[KitTarget]:
    adapter = KitTarget(service)
    yield adapter
    adapter.close()


def test_the_issuer_conforms(target: KitTarget) -> None:
    kit = Conformance(ApiKeyIssuer, target, strict=True)
    assert kit.run() == list(Conformance.CHECKS)
    assert list(kit.skipped) == ["check_in_use"]  # it cannot tell who uses a key


def test_the_issuer_waits_for_a_new_key_to_propagate(
    service: FakeKeyService, target: KitTarget
) -> None:
    service.propagation_delay = 0.5
    kit = Conformance(ApiKeyIssuer, target)
    kit.check_crash_resume()
    kit.check_verify_rejects_permanently()
