"""``postgres-dual`` end to end on the whole stack: ScaiVault's signed ``rotation.due``, the
receiver, a worker and beat, the private PostgreSQL server, a consumer *process* connected as the
old role, and on-call's real CLI.

The rotation moves the secret to the second role at once; once grace is over, finalize waits
while the consumer is connected (``status`` shows who, ``finalize`` without ``--now`` exits 1
naming the session), and runs at the first check after the consumer disconnects, within the
re-check delay then scheduled plus a sweep; the old password is then refused. No password
reaches a log, the CLI's output or the server log.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.local.postgres_target import PostgresTarget
from orchestrator.local.sandbox import Sandbox
from orchestrator.routing import RECHECK_CAP
from orchestrator.state import history
from tests.fixtures.postgres import PgServer
from tests.fixtures.stack import OnCallCli

pytestmark = pytest.mark.integration

#: The sandbox's ``finalize_recheck`` and ``ROTATOR_SWEEP_INTERVAL`` (seconds), and what a busy
#: machine may add to them (a worker picking up the task, finalize's own connections).
RECHECK_S = 1.0
SWEEP_S = 2.0
MARGIN_S = 20.0
#: The apps whose two roles the module's sandbox rotates (unique on the session's server).
APP = f"orders_{secrets.token_hex(3)}"
ROLLBACK_APP = f"billing_{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def pg_box(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PgServer
) -> Iterator[Sandbox]:
    """The sandbox with a PostgreSQL part: a ``postgres-dual`` rule per app, re-checking a
    waiting finalize every second (doubling), and a 3 s grace."""
    target = PostgresTarget(postgres_server.server, [APP, ROLLBACK_APP], recheck=f"{RECHECK_S:g}s")
    box = Sandbox(tmp_path_factory.mktemp("pg-sandbox"), grace="3s", postgres=target)
    try:
        box.start()
    except Exception:
        box.close()
        raise
    yield box
    box.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def deferrals(box: Sandbox, path: str) -> list[dict[str, str]]:
    """``path``'s ``finalize_deferred`` history entries, oldest first."""
    client = redis.Redis.from_url(box.ends.redis_url, decode_responses=True)
    try:
        return [e for e in history.read(client, path) if e["event"] == "finalize_deferred"]
    finally:
        client.close()


def longest_recheck(checks: int) -> float:
    """The longest delay finalize_wait schedules after its ``checks``-th deferral:
    ``finalize_recheck`` (1 s here) doubling per deferral, at most ``RECHECK_CAP``."""
    return min(RECHECK_CAP.total_seconds(), RECHECK_S * 2.0 ** (checks - 1))


def test_finalize_waits_for_the_consumer_then_revokes_the_old_role(
    pg_box: Sandbox, postgres_server: PgServer, tmp_path: Path
) -> None:
    box, pg, cli = pg_box, postgres_server, OnCallCli(pg_box)
    path = box.add_postgres(APP)
    first = dict(box.originals[path])
    old_role, new_role = f"{APP}_a", f"{APP}_b"
    consumer = pg.consumer(old_role, first["password"], "orders-api", tmp_path / "consumer.log")
    try:
        box.trigger(path)  # ScaiVault fires a signed rotation.due to the receiver
        record = wait_for(
            lambda: (r := cli.record(path)).get("waiting") and r,
            "finalize to wait for the consumer",
        )
        assert record["state"] == "grace"
        expected = f"1 session of {old_role} from 127.0.0.1 (orders-api)"
        assert record["waiting"].startswith(expected)

        current = box.read(path)
        new = current["data"]
        assert current["version"] == 2 and new["username"] == new_role
        assert new["host"] == first["host"] and new["port"] == first["port"], "fields kept"
        assert pg.accepts(new_role, new["password"])
        assert pg.accepts(old_role, first["password"]), "never revoked while in use"

        status = cli("status", path)
        assert status.code == 0, status
        assert "waiting" in status.out and expected in status.out, status
        refused = cli("finalize", path, "--reason", "e2e")
        assert refused.code == 1, refused
        assert "still in use" in refused.out + refused.err and expected in refused.out + refused.err
        assert cli.record(path)["state"] == "grace", "finalize without --now does not revoke"
        assert pg.accepts(old_role, first["password"])
    finally:
        consumer.kill()

    wait_for(lambda: pg.sessions(old_role) == 0, "the consumer's session to end")
    unused_at = time.monotonic()
    seen = len(deferrals(box, path))
    done = cli.wait_state(path, {"done", "failed", "needs_attention"}, timeout=120)
    took = time.monotonic() - unused_at
    assert done["state"] == "done", done
    deferred = deferrals(box, path)
    assert len(deferred) <= seen + 1, "finalized at the first check after the disconnect"
    # The next check comes at most one scheduled delay later, picked up by the next sweep.
    bound = longest_recheck(int(deferred[-1]["checks"])) + SWEEP_S + MARGIN_S
    assert took <= bound, f"finalize came {took:.0f}s after the last session ended (> {bound:.0f}s)"
    assert not pg.accepts(old_role, first["password"]), "the old password is revoked"
    assert pg.accepts(new_role, new["password"])
    after = cli("status", path)
    assert after.code == 0 and "done" in after.out, after

    cli.assert_no_secret_values()
    logs = "\n".join(
        child.log_tail(1_000_000) for child in box.children.values()
    ) + consumer.log_tail(1_000)
    server_log = pg.log_text()
    assert "postgres_dual_minted" in logs and "finalize_deferred" in logs
    for value in (
        first["password"],
        new["password"],
        box.originals[box.ends.pg_admin_path]["password"],
    ):
        assert value not in logs and value not in server_log


def test_rollback_while_finalize_waits_restores_the_old_role_and_revokes_the_new_one(
    pg_box: Sandbox, postgres_server: PgServer, tmp_path: Path
) -> None:
    box, pg, cli = pg_box, postgres_server, OnCallCli(pg_box)
    path = box.add_postgres(ROLLBACK_APP)
    first = dict(box.originals[path])
    old_role, new_role = f"{ROLLBACK_APP}_a", f"{ROLLBACK_APP}_b"
    consumer = pg.consumer(old_role, first["password"], "billing-api", tmp_path / "consumer.log")
    try:
        box.trigger(path)
        wait_for(lambda: cli.record(path).get("waiting"), "finalize to wait for the consumer")
        new = box.read(path)["data"]
        assert new["username"] == new_role and pg.accepts(new_role, new["password"])

        done = cli("rollback", path, "--reason", "the new role lacks a grant")
        assert done.code == 0, done
        assert "WARNING" not in done.err, "postgres-dual revokes the new credential itself"
        assert cli.record(path)["state"] == "rolled_back"
        current = box.read(path)
        assert current["version"] == 3 and current["data"] == first, "the old login is back"
        assert pg.accepts(old_role, first["password"]), "the consumer's login still works"
        assert not pg.accepts(new_role, new["password"]), "the rolled-back login is revoked"
        assert consumer.alive
    finally:
        consumer.kill()
    cli.assert_no_secret_values()
    server_log = pg.log_text()
    assert first["password"] not in server_log and new["password"] not in server_log
