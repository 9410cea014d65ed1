"""The sealing path with a real updater: a Redis ACL user whose password changes in place.

The worker is SIGKILLed between ``apply`` and ``store``: the target already has the new
password, ScaiVault still has the old one. The resumed rotation must store the value the target
already has (unsealed from the run record, never re-minted), and at every moment a working
credential must be recoverable: ScaiVault's current one, or the sealed one.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest

from orchestrator.engine.seal import Sealer
from tests.fixtures.worker import EngineStack
from tests.rotators.acl_password import accepts

pytestmark = pytest.mark.integration

PATH = "db/orders/app"


@pytest.fixture
def acl_user(engine_stack: EngineStack) -> Iterator[dict[str, str]]:
    user = f"rot_{secrets.token_hex(4)}"
    password = f"SENTINEL-old-{secrets.token_hex(8)}"
    engine_stack.client.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "+ping", "+acl|setuser"
    )
    yield {"username": user, "password": password}
    engine_stack.client.execute_command("ACL", "DELUSER", user)


def test_kill_between_apply_and_store_resumes_with_the_sealed_value(
    engine_stack: EngineStack, acl_user: dict[str, str]
) -> None:
    stack = engine_stack
    stack.routing(
        "[[rules]]\n"
        'match = "db/**"\n'
        'rotator = "acl-password"\n'
        'grace_period = "1s"\n'
        "[rules.options]\n"
        f'redis_url = "{stack.redis_url}"\n'
        f'signal_url = "{stack.redis_url}"\n'
        'hold = ["after_apply"]\n'
    )
    version = stack.emulator.put_secret(PATH, acl_user)
    stack.start(workers=2)
    stack.publish(path=PATH, event_id="evt_seal", from_version=version)
    rotation_id = stack.reached("after_apply")

    sealer = Sealer([stack.seal_key.encode()])
    applied = sealer.unseal(stack.store.sealed(rotation_id) or "", context=rotation_id)
    user = acl_user["username"]
    assert accepts(stack.redis_url, user, applied["password"]), "the target has the new value"
    assert not accepts(stack.redis_url, user, acl_user["password"]), "in place: old is gone"

    lockouts: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            blob = stack.store.sealed(rotation_id)  # first the blob, then the vault: see below
            stored = stack.emulator.get_secret(PATH)["data"]["password"]
            usable = [stored] + (
                [sealer.unseal(blob, context=rotation_id)["password"]] if blob else []
            )
            if not any(accepts(stack.redis_url, user, p) for p in usable):
                lockouts.append(
                    f"no working credential at version {stack.emulator.get_secret(PATH)['version']}"
                )
            stop.wait(0.05)

    # Reading the blob before the vault: the blob is deleted only after the store, so a
    # missing blob means the vault read that follows already sees the stored version.
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stack.kill_holder_of(rotation_id)
        done = stack.wait_run(PATH, ("done", "failed", "needs_attention"), timeout=60)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert done.state == "done", done
    assert lockouts == []
    current = stack.emulator.get_secret(PATH)
    assert current["version"] == version + 1
    assert current["data"]["password"] == applied["password"], "stored what the target has"
    assert current["data"]["username"] == user
    assert accepts(stack.redis_url, user, current["data"]["password"])
    assert stack.store.sealed(rotation_id) is None, "the sealed value is deleted once stored"
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
