"""``mysql-password``, ``mysql-dual`` and ``redis-acl`` end to end: ScaiVault (the emulator)
fires a signed ``rotation.due`` for each, the receiver queues it, a real worker rotates it
against the session's private MariaDB and ACL Redis, and beat finalizes it.

For each: the new credential logs in, the old one keeps working through grace (issuers) and
stops after finalize, the data's other fields are kept, and no plaintext appears in the
processes' logs, the stack's Redis or the MariaDB general and slow query logs. The grace period
is an hour; once the old credential has been seen working in it, the test ends the grace on
Redis's clock (what an hour passing would do) and beat's sweep does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.local.sandbox import Sandbox
from orchestrator.state import keys
from orchestrator.state.due import DueQueue
from orchestrator.state.runs import RunStore
from tests.fixtures.mariadb import MariaDB, unique_user
from tests.fixtures.redis import AclRedis

pytestmark = pytest.mark.integration

GRACE = "1h"
NOTE = {"note": "kept by every rotation", "port": 3306}


class DatabaseBox(Sandbox):
    """The sandbox with one rule per database rotator, and the accounts they rotate."""

    def __init__(self, workdir: Path, db: MariaDB, acl: AclRedis) -> None:
        super().__init__(workdir, grace=GRACE)
        self.db, self.acl = db, acl
        self.admins: dict[str, dict[str, str]] = {}
        self.logins: dict[str, dict[str, Any]] = {}
        self._accounts()

    def _accounts(self) -> None:
        mysql_admin = self._mysql_login("e2e_admin", "CREATE USER", "PROCESS")
        self.admins["mysql"], self.admins["redis"] = mysql_admin, dict(self.acl.admin)
        self.logins["mysql-password"] = {**self._mysql_login("e2e_one"), **NOTE}
        self.logins["mysql-dual"] = {**self._mysql_login("e2e_blue"), **NOTE}
        self.green = self._mysql_login("e2e_green")["username"]
        self.logins["redis-acl"] = {**self.acl.create_user("e2e_cache", "+ping"), **NOTE}

    def _mysql_login(self, prefix: str, *grants: str) -> dict[str, str]:
        login = {"username": unique_user(prefix), "password": f"SENTINEL-{unique_user('pw')}"}
        self.db.create_account(login["username"], login["password"], *grants)
        return login

    def path(self, rotator: str) -> str:
        return f"{self.ends.prefix}/{rotator}/app"

    def admin_path(self, kind: str) -> str:
        return f"{self.ends.prefix}/admin/{kind}"

    def routing_rules(self) -> list[dict[str, Any]]:
        mysql = {"host": "127.0.0.1", "port": self.db.port}
        options = {
            "mysql-password": {
                **mysql,
                "username": self.logins["mysql-password"]["username"],
                "admin_secret_path": self.admin_path("mysql"),
            },
            "mysql-dual": {
                **mysql,
                "users": [self.logins["mysql-dual"]["username"], self.green],
                "admin_secret_path": self.admin_path("mysql"),
            },
            "redis-acl": {
                "host": "127.0.0.1",
                "port": self.acl.port,
                "username": self.logins["redis-acl"]["username"],
                "admin_secret_path": self.admin_path("redis"),
                "acl_save": True,
            },
        }
        return [
            {"match": self.path(name), "rotator": name, "grace_period": GRACE, "options": opts}
            for name, opts in options.items()
        ]

    def provision(self) -> None:
        """Store the admins and the logins in ScaiVault, each path on the rotation policy."""
        for kind, admin in self.admins.items():
            self.originals[self.admin_path(kind)] = admin
            self.put(self.admin_path(kind), admin, f"{kind} rotator admin")
        for rotator, login in self.logins.items():
            path = self.path(rotator)
            self.originals[path] = login
            self.put(path, login, f"{rotator} login")
            self.schedule(path)


@pytest.fixture(scope="module")
def box(
    tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB, acl_redis: AclRedis
) -> Iterator[DatabaseBox]:
    sandbox = DatabaseBox(tmp_path_factory.mktemp("db-e2e"), mariadb, acl_redis)
    try:
        sandbox.start()
        sandbox.provision()
    except Exception:
        sandbox.close()
        raise
    yield sandbox
    sandbox.close()


def record(box: DatabaseBox, path: str) -> dict[str, Any]:
    client = redis.Redis.from_url(box.ends.redis_url)
    try:
        found = RunStore(client).last(path)
    finally:
        client.close()
    return found.to_dict() if found is not None else {}


def wait_state(box: DatabaseBox, path: str, state: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = record(box, path)
        if found.get("state") == state:
            return found
        assert found.get("state") not in {"failed", "needs_attention"}, found
        if time.monotonic() > deadline:
            logs = box.children["worker"].log_tail(40)
            raise AssertionError(f"{path} not {state} after {timeout}s: {found}\n{logs}")
        time.sleep(0.2)


def grace_over(box: DatabaseBox, rotation_id: str) -> None:
    """What the hour of grace passing would do: the run's grace ends now and its due entry is
    due now (on Redis's clock)."""
    client = redis.Redis.from_url(box.ends.redis_url)
    try:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        client.hset(keys.run(rotation_id), "finalize_after_ms", now_ms)
        DueQueue(client).schedule(rotation_id, now_ms, replace=True)
    finally:
        client.close()


def redis_text(url: str) -> str:
    """Every key and value of the stack's Redis as text."""
    readers = {
        "string": lambda c, k: c.get(k),
        "hash": lambda c, k: c.hgetall(k),
        "list": lambda c, k: c.lrange(k, 0, -1),
        "set": lambda c, k: c.smembers(k),
        "zset": lambda c, k: c.zrange(k, 0, -1),
        "stream": lambda c, k: c.xrange(k),
    }
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return "\n".join(
            f"{key} {readers.get(client.type(key), lambda c, k: '')(client, key)!r}"
            for key in client.scan_iter(count=500)
        )
    finally:
        client.close()


def assert_no_plaintext(box: DatabaseBox) -> None:
    """No password of any version, nor an admin's, in a process log, the stack's Redis, the
    MariaDB query logs or the ACL file."""
    values = {str(data["password"]) for data in box.originals.values() if "password" in data}
    for rotator in box.logins:
        versions = box.admin("GET", f"/v1/secrets/{box.path(rotator)}/versions")["versions"]
        values |= {box.read(box.path(rotator), v["version"])["data"]["password"] for v in versions}
    logs = "\n".join(p.read_text(errors="replace") for p in box.ends.workdir.glob("*.log"))
    stored = redis_text(box.ends.redis_url)
    places = {
        "process logs": logs,
        "the stack's Redis": stored,
        "MariaDB's general and slow logs": box.db.logs(),
        "the ACL file": box.acl.acl_file.read_text(),
    }
    for where, text in places.items():
        for value in values:
            assert value not in text, f"a password appears in {where}"


def rotate(box: DatabaseBox, rotator: str, logs_in: Callable[[dict[str, Any]], bool]) -> None:
    """A signed rotation.due for the rotator's path, through grace to done."""
    path = box.path(rotator)
    old = box.read(path)["data"]
    box.trigger(path)  # ScaiVault fires a signed rotation.due at the receiver
    in_grace = wait_state(box, path, "grace")
    current = box.read(path)
    new = current["data"]
    assert current["metadata"]["rotated_by"] == "scaivault-rotator"
    assert new["password"] != old["password"]
    assert {k: new[k] for k in NOTE} == NOTE, "the data's other fields are kept"
    assert logs_in(new), "the new credential logs in"
    updater = rotator == "mysql-password"
    assert logs_in(old) is not updater, "the old credential works through grace (issuers)"

    grace_over(box, in_grace["rotation_id"])
    wait_state(box, path, "done")
    assert logs_in(new)
    assert not logs_in(old), "the old credential stops after finalize"


def test_mysql_password_rotates_in_place_from_a_signed_event(box: DatabaseBox) -> None:
    rotate(box, "mysql-password", lambda d: box.db.accepts(d["username"], d["password"]))
    assert_no_plaintext(box)


def test_mysql_dual_switches_accounts_from_a_signed_event(box: DatabaseBox) -> None:
    before = box.read(box.path("mysql-dual"))["data"]["username"]
    rotate(box, "mysql-dual", lambda d: box.db.accepts(d["username"], d["password"]))
    assert box.read(box.path("mysql-dual"))["data"]["username"] != before
    assert_no_plaintext(box)


def test_redis_acl_adds_then_removes_a_password_from_a_signed_event(box: DatabaseBox) -> None:
    rotate(box, "redis-acl", lambda d: box.acl.accepts(d["username"], d["password"]))
    user = box.logins["redis-acl"]["username"]
    saved = [line for line in box.acl.acl_file.read_text().splitlines() if f"user {user} " in line]
    assert len(saved) == 1 and saved[0].count("#") == 1, "ACL SAVE kept one password"
    assert_no_plaintext(box)
