"""The example issuer plugin passes the conformance kit over its fake key service (real HTTP on
127.0.0.1), and the kit catches the bugs a plugin author seeded into it: among them the three
it used to miss (``discard`` revoking the old key, ``discard`` doing nothing, a raw ``httpx``
exception escaping) and a 401 taken for propagation forever. The plugin also installs as its
own distribution and its own suite runs the kit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from example_issuer import ApiKeyIssuer, Context
from example_issuer.fake import KitTarget

from orchestrator.local.processes import cli_argv
from rotators import SecretData, TransientError
from rotators.testing import Conformance, ConformanceError
from tests.fixtures.issuer import EXAMPLE_ISSUER, REPO_ROOT, site_env

pytestmark = pytest.mark.integration

# --- bugs seeded into a working issuer -------------------------------------------------------


class DiscardsTheOldKey(ApiKeyIssuer):
    """Revokes the key of ``ctx.current``: the one every consumer still uses."""

    def discard(self, ctx: Context, new: SecretData) -> None:
        with self._admin(ctx) as service:
            service.revoke(str(ctx.current.data["key_id"]))


class DiscardsNothing(ApiKeyIssuer):
    def discard(self, ctx: Context, new: SecretData) -> None:
        ctx.log.info("api_key_discarded", key_id=new["key_id"])


class RaisesRawHttpx(ApiKeyIssuer):
    """Calls the service with httpx directly and lets its exceptions out."""

    def mint(self, ctx: Context) -> dict[str, Any]:
        token = ctx.vault.read(ctx.options.admin_secret_path).data["token"]
        response = httpx.post(
            f"{ctx.options.base_url}/v1/keys",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": ctx.rotation_id},
            timeout=ctx.options.timeout,
        )
        response.raise_for_status()
        body = response.json()
        return {**ctx.current.data, "key_id": body["id"], "api_key": body["secret"]}


class RefusalIsAlwaysPropagation(ApiKeyIssuer):
    """A 401 in verify is "not propagated yet", however long ago the key was minted."""

    def _propagating(self, ctx: Context, key_id: str) -> bool:
        return True


class PermanentWhenUnavailable(ApiKeyIssuer):
    def verify(self, ctx: Context, new: SecretData) -> None:
        from rotators import PermanentError

        try:
            super().verify(ctx, new)
        except TransientError as exc:
            raise PermanentError(f"verify failed: {exc.message}") from None


class NamesTheKeyWhenUnreachable(ApiKeyIssuer):
    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        try:
            super().finalize(ctx, old, new)
        except TransientError:
            raise TransientError(f"could not revoke {old['api_key']}") from None


class PreflightMintsAProbeKey(ApiKeyIssuer):
    def preflight(self, ctx: Context) -> None:
        with self._admin(ctx) as service:
            service.create(idempotency_key=f"probe-{ctx.rotation_id}")


class MintsWithoutIdempotency(ApiKeyIssuer):
    def mint(self, ctx: Context) -> dict[str, Any]:
        with self._admin(ctx) as service:
            key = service.create(idempotency_key=os.urandom(8).hex())
        return {**ctx.current.data, "key_id": key.id, "api_key": key.secret.reveal()}


def test_the_example_issuer_passes_the_kit(issuer_target: KitTarget) -> None:
    kit = Conformance(ApiKeyIssuer, issuer_target)
    assert kit.run() == list(Conformance.CHECKS)
    assert list(kit.skipped) == ["check_in_use"]


@pytest.mark.parametrize(
    ("rotator", "check", "complaint"),
    [
        (DiscardsTheOldKey, "check_discard", "refuses the old credential after discard"),
        (DiscardsNothing, "check_discard", "still accepts the new credential after discard"),
        (RaisesRawHttpx, "check_network_faults", "mint let ConnectError escape"),
        (RefusalIsAlwaysPropagation, "check_verify_rejects_permanently", "still raised Trans"),
        (PermanentWhenUnavailable, "check_network_faults", "verify raised PermanentError"),
        (NamesTheKeyWhenUnreachable, "check_network_faults", "holds a secret value"),
        (PreflightMintsAProbeKey, "check_preflight", "preflight changed the target"),
        (MintsWithoutIdempotency, "check_idempotent_steps", "returned a different value"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_the_kit_catches_each_seeded_bug(
    issuer_target: KitTarget, rotator: type[ApiKeyIssuer], check: str, complaint: str
) -> None:
    kit = Conformance(rotator, issuer_target, verify_timeout=1.0)
    with pytest.raises(ConformanceError, match=complaint) as err:
        getattr(kit, check)()
    for value in kit.sentinels:
        assert value not in str(err.value)


# --- its own distribution --------------------------------------------------------------------


def test_the_distribution_registers_its_rotator(issuer_site: Path) -> None:
    assert list(issuer_site.glob("scaivault_example_issuer-1.0.0.dist-info"))
    listed = subprocess.run(
        cli_argv("rotators", "--json"), env=site_env(issuer_site), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert '"example-issuer"' in listed.stdout and '"issuer"' in listed.stdout


def test_the_plugins_own_suite_runs_the_kit(issuer_site: Path) -> None:
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(EXAMPLE_ISSUER / "tests")],
        env=site_env(issuer_site), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert suite.returncode == 0, suite.stdout[-3000:]
    assert "2 passed" in suite.stdout
