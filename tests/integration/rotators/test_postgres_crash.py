"""The PostgreSQL rotators under real worker processes that are SIGKILLed mid-rotation.

``postgres-password``, killed between ``apply`` and the store: the server already has the new
password and ScaiVault the old one; the resumed rotation must store the sealed value the server
has (never mint another), so the role logs in with what ScaiVault holds. ``postgres-dual``,
killed inside ``mint`` after the new role's password was set but before the engine sealed it:
the resumed rotation mints again on the same role, so exactly one new version is stored, its
password is the one the role accepts, and the old role is revoked after grace. No password
reaches a worker log or the server log."""

from __future__ import annotations

import pytest

from orchestrator.engine.seal import Sealer
from orchestrator.local.routing_file import routing_toml
from tests.fixtures.postgres import PgServer
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration

PATH = "db/orders/app"
ADMIN_PATH = "db/orders/admin"


@pytest.mark.parametrize("by_admin", [True, False], ids=["admin", "the role itself"])
def test_kill_between_apply_and_store_resumes_from_the_sealed_value(
    engine_stack: EngineStack, postgres_server: PgServer, by_admin: bool
) -> None:
    stack, pg = engine_stack, postgres_server
    role, password = pg.role()
    options = {
        "host": pg.host,
        "port": pg.port,
        "signal_url": stack.redis_url,
        "hold": ["after_apply"],
    }
    admin = pg.admin_role()
    if by_admin:
        stack.emulator.put_secret(ADMIN_PATH, admin)
        options["admin_secret_path"] = ADMIN_PATH
    rule = {"match": "db/**", "rotator": "test-postgres-held", "grace_period": "1s"}
    stack.routing(routing_toml([{**rule, "options": options}]))
    version = stack.emulator.put_secret(PATH, {"username": role, "password": password})
    stack.start(workers=2)
    stack.publish(path=PATH, event_id="evt_pg_seal", from_version=version)
    rotation_id = stack.reached("after_apply")

    sealed = Sealer([stack.seal_key.encode()]).unseal(
        stack.store.sealed(rotation_id) or "", context=rotation_id
    )
    assert pg.accepts(role, sealed["password"]), "the server has the new password"
    assert not pg.accepts(role, password), "in place: the old one is gone"
    assert stack.emulator.get_secret(PATH)["data"]["password"] == password

    killed = stack.kill_holder_of(rotation_id)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"), timeout=90)
    assert done.state == "done", done
    assert stack.finished_elsewhere(rotation_id, killed), "resumed by another worker"
    current = stack.emulator.get_secret(PATH)
    assert current["version"] == version + 1
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    assert current["data"] == {"username": role, "password": sealed["password"]}
    assert pg.accepts(role, current["data"]["password"]), "ScaiVault's password logs in"
    assert stack.store.sealed(rotation_id) is None

    logs, server_log = stack.logs(), pg.log_text()
    assert "postgres_password_set" in logs and f'ALTER ROLE "{role}"' in server_log
    for value in (password, sealed["password"], admin["password"]):
        assert value not in logs and value not in server_log


def test_kill_inside_dual_mint_resumes_with_one_known_password(
    engine_stack: EngineStack, postgres_server: PgServer
) -> None:
    stack, pg = engine_stack, postgres_server
    (a, a_password), (b, _) = pg.role("app_a"), pg.role("app_b")
    admin = pg.admin_role("pg_read_all_stats")
    stack.emulator.put_secret(ADMIN_PATH, admin)
    options = {
        "host": pg.host,
        "port": pg.port,
        "users": [a, b],
        "admin_secret_path": ADMIN_PATH,
        "signal_url": stack.redis_url,
        "hold": ["after_mint"],
    }
    rule = {"match": "db/**", "rotator": "test-postgres-dual-held", "grace_period": "1s"}
    stack.routing(routing_toml([{**rule, "options": options}]))
    version = stack.emulator.put_secret(PATH, {"username": a, "password": a_password})
    stack.start(workers=2)
    stack.publish(path=PATH, event_id="evt_pg_dual", from_version=version)
    rotation_id = stack.reached("after_mint")
    assert stack.store.sealed(rotation_id) is None, "killed before the engine sealed it"
    assert pg.accepts(a, a_password), "the old role works meanwhile"

    stack.kill_holder_of(rotation_id)
    done = stack.wait_run(PATH, ("done", "failed", "needs_attention"), timeout=90)
    assert done.state == "done", done
    assert [v["version"] for v in stack.emulator.versions(PATH)] == [version, version + 1]
    current = stack.emulator.get_secret(PATH)["data"]
    assert current["username"] == b and pg.accepts(b, current["password"])
    assert not pg.accepts(a, a_password), "the old role is revoked after grace"
    minted = [line for line in stack.logs().splitlines() if "postgres_dual_minted" in line]
    assert len(minted) == 2, "the resumed rotation minted again on the same role"

    logs, server_log = stack.logs(), pg.log_text()
    for value in (a_password, current["password"], admin["password"]):
        assert value not in logs and value not in server_log
