"""salesforce-oauth end to end: real worker and beat, the ScaiVault emulator, the fake over TLS.

One stack for the module (a :class:`~orchestrator.local.sandbox.Sandbox` with a routing file of our
own: short grace, short backoff on ``REQUEST_LIMIT_EXCEEDED``), with a worker we SIGKILL and
restart. Crashes are placed exactly: the fake applies a request, then holds its answer
(``hang``) while the test kills the worker, so the stage or promotion did happen and the
worker never learned of it. Every test ends by scanning the processes' logs and Redis for
any secret value the test saw.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.local.processes import ChildProcess, cli_argv
from orchestrator.local.sandbox import Sandbox
from orchestrator.state.runs import RunStore
from rotators.salesforce_oauth import NOTE_STAGED_ID, NOTE_STAGED_KEY, key_fingerprint
from tests.fixtures.stack import unique

pytestmark = pytest.mark.integration

GRACE = "2s"


class SalesforceBox(Sandbox):
    """The sandbox with a routing file of this module's own and a worker it can crash."""

    def routing_rules(self) -> list[dict[str, Any]]:
        rule = self.salesforce_rule(
            GRACE, propagation_interval=0.2, limit_backoff=1.0, read_timeout=60.0
        )
        return [rule]

    def start_worker(self) -> ChildProcess:
        """Replace the running worker by a new single-process one."""
        old = self.children.get("worker")
        if old is not None and old.alive:
            old.stop()
        env = self.role_env()
        env["ROTATOR_METRICS_PORT"] = "0"
        n = sum(1 for name in self.children if name.startswith("worker"))
        log = self.ends.workdir / f"worker-{n}.log"
        child = ChildProcess("worker", cli_argv("worker", "-c", "1"), log, env, self.ends.workdir)
        self.stack.add(child)
        self.children["worker"] = child
        self.children[f"worker-{n}"] = child
        return child.start()

    def worker(self) -> ChildProcess:
        return self.children["worker"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_argv(*args),
            env=self.role_env(token=self.ends.admin_token),
            cwd=self.ends.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def fake(self, method: str, path: str, body: Any = None) -> Any:
        response = self.salesforce(method, path, body)
        response.raise_for_status()
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceBox]:
    sandbox = SalesforceBox(
        tmp_path_factory.mktemp("sf-e2e"),
        grace=GRACE,
        engine_env={
            "ROTATOR_LEASE_SECONDS": "3",
            "ROTATOR_FINALIZE_LEASE": "4",
            "ROTATOR_SWEEP_INTERVAL": "1",
            "ROTATOR_RETRY_BACKOFF_MAX": "1.5",
        },
    )
    try:
        sandbox.start()
        sandbox.start_worker()
    except Exception:
        sandbox.close()
        raise
    yield sandbox
    sandbox.close()


@pytest.fixture
def sf(box: SalesforceBox) -> Iterator[SalesforceBox]:
    """The module's stack; faults and config reset, secrets scanned for after the test."""
    box.fake("DELETE", "/_fake/faults")
    box.fake("POST", "/_fake/config", {"propagation_delay": 0.0})
    if not box.worker().alive:
        box.start_worker()
    yield box
    assert_no_secret_anywhere(box)


# --- helpers -----------------------------------------------------------------------------


def consumer_of(box: SalesforceBox, path: str) -> dict[str, Any]:
    """The fake's view (ids, keys, staged state) of the consumer stored at ``path``."""
    original_key = box.originals[path]["client_id"]
    current_key = box.read(path)["data"]["client_id"]
    for app in box.fake("GET", "/_fake/state")["apps"]:
        for consumer in app["consumers"]:
            staged_key = (consumer["staged"] or {}).get("key")
            if {consumer["key"], staged_key} & {original_key, current_key}:
                return dict(consumer)
    raise AssertionError(f"no consumer for {path}")


def requests_to(box: SalesforceBox, method: str, consumer_id: str, suffix: str) -> list[Any]:
    return [
        r
        for r in box.fake("GET", "/_fake/requests")
        if r["method"] == method
        and f"/{consumer_id}/staged" in r["path"]
        and r["path"].endswith(suffix)
    ]


def wait_for(predicate: Any, what: str, box: SalesforceBox, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; worker log:\n{box.worker().log_tail()}"
            )
        time.sleep(0.1)


def status(box: SalesforceBox, path: str) -> dict[str, Any]:
    """The path's latest run record, read from Redis (a CLI call per poll would cost a core)."""
    client = redis.Redis.from_url(box.ends.redis_url)
    try:
        record = RunStore(client).last(path)
    finally:
        client.close()
    return record.to_dict() if record is not None else {}


def wait_done(box: SalesforceBox, path: str, timeout: float = 90.0) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        record = status(box, path)
        return record if record.get("state") in {"done", "failed", "needs_attention"} else None

    record: dict[str, Any] = wait_for(finished, f"{path} to finish", box, timeout)
    assert record["state"] == "done", (record.get("last_error"), record.get("step"))
    return record


def assert_rotated(box: SalesforceBox, path: str) -> dict[str, Any]:
    """ScaiVault holds a new pair that works; the original pair is revoked; other data kept."""
    old, current = box.originals[path], box.read(path)
    new = current["data"]
    assert current["version"] == 2 and current["metadata"]["rotator"] == "salesforce-oauth"
    assert new["client_id"] != old["client_id"] and new["client_secret"] != old["client_secret"]
    assert box.salesforce_accepts(new) and not box.salesforce_accepts(old)
    return dict(new)


def rotate(box: SalesforceBox, path: str) -> None:
    result = box.cli("rotate", path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr


def secret_values(box: SalesforceBox) -> set[str]:
    values: set[str] = set()
    for path, data in box.originals.items():
        values.add(str(data["client_secret"]))
        for version in box.admin("GET", f"/v1/secrets/{path}/versions")["versions"]:
            values.add(str(box.read(path, version["version"])["data"]["client_secret"]))
    return values


def redis_text(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=False)
    parts: list[str] = []
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = b""
        parts.append(f"{key!r} {value!r}")
    client.close()
    return "\n".join(parts)


def assert_no_secret_anywhere(box: SalesforceBox) -> None:
    logs = "\n".join(p.read_text(errors="replace") for p in Path(box.ends.workdir).glob("*.log"))
    stored = redis_text(box.ends.redis_url)
    for value in secret_values(box):
        assert value not in logs, "a client_secret appears in a process log"
        assert value not in stored, "a client_secret appears in Redis"


# --- tests -------------------------------------------------------------------------------


def test_scheduled_rotation_rotates_and_finalizes_over_tls(sf: SalesforceBox) -> None:
    path = sf.add_salesforce(unique("oauth"))
    sf.trigger(path)  # ScaiVault fires a signed rotation.due to the receiver
    wait_done(sf, path)
    new = assert_rotated(sf, path)
    consumer = consumer_of(sf, path)
    assert consumer["key"] == new["client_id"] and consumer["staged"] is None


def test_crash_before_the_stage_answer_replaces_the_unknown_pair(sf: SalesforceBox) -> None:
    path = sf.add_salesforce(unique("crash-stage"), scheduled=False)
    consumer_id = consumer_of(sf, path)["id"]
    sf.fake("POST", "/_fake/faults", {"match": "POST */staged", "kind": "hang", "seconds": 30})
    rotate(sf, path)
    wait_for(lambda: requests_to(sf, "POST", consumer_id, "/staged"), "the stage", sf)
    sf.worker().kill()
    orphan = consumer_of(sf, path)["staged"]
    assert orphan["state"] == "Active" and sf.read(path)["version"] == 1
    assert NOTE_STAGED_ID not in status(sf, path)["notes"]  # its id never reached the run

    sf.start_worker()
    wait_done(sf, path)
    new = assert_rotated(sf, path)
    assert new["client_id"] != orphan["key"]
    assert len(requests_to(sf, "DELETE", consumer_id, f"/{orphan['id']}")) == 1
    assert len(requests_to(sf, "POST", consumer_id, "/staged")) == 2  # into an empty slot
    assert "salesforce_unknown_staged_deleted" in sf.worker().log_tail(10_000)


def test_crash_while_the_staged_pair_propagates_adopts_it(sf: SalesforceBox) -> None:
    sf.fake("POST", "/_fake/config", {"propagation_delay": 8.0})
    path = sf.add_salesforce(unique("crash-propagate"), scheduled=False)
    consumer_id = consumer_of(sf, path)["id"]
    rotate(sf, path)
    noted = wait_for(lambda: status(sf, path)["notes"].get(NOTE_STAGED_KEY), "the note", sf)
    sf.worker().kill()  # while mint waits for Salesforce to accept the staged pair
    staged = consumer_of(sf, path)["staged"]
    assert staged["state"] == "Active", "killed before the promotion"
    assert staged["id"] == status(sf, path)["notes"][NOTE_STAGED_ID]

    sf.start_worker()
    wait_done(sf, path)
    new = assert_rotated(sf, path)
    assert key_fingerprint(new["client_id"]) == noted and new["client_id"] == staged["key"]
    assert len(requests_to(sf, "POST", consumer_id, "/staged")) == 1  # never re-POSTed
    assert "salesforce_staged_adopted" in sf.worker().log_tail(10_000)


def test_crash_after_promote_rereads_the_new_primary(sf: SalesforceBox) -> None:
    path = sf.add_salesforce(unique("crash-promote"), scheduled=False)
    consumer_id = consumer_of(sf, path)["id"]
    sf.fake("POST", "/_fake/faults", {"match": "PATCH */staged/*", "kind": "hang", "seconds": 30})
    rotate(sf, path)
    patched = wait_for(lambda: requests_to(sf, "PATCH", consumer_id, ""), "the promotion", sf)
    sf.worker().kill()
    consumer = consumer_of(sf, path)
    assert consumer["staged"]["state"] == "Rotated" and sf.read(path)["version"] == 1
    assert sf.salesforce_accepts(sf.originals[path])  # the old pair still works meanwhile
    notes = status(sf, path)["notes"]  # what makes the resumed run take the primary as its own
    assert patched[0]["path"].endswith(f"/staged/{notes[NOTE_STAGED_ID]}")
    assert notes[NOTE_STAGED_KEY] == key_fingerprint(consumer["key"])

    sf.start_worker()
    wait_done(sf, path)
    new = assert_rotated(sf, path)
    assert new["client_id"] == consumer["key"]
    assert len(requests_to(sf, "POST", consumer_id, "/staged")) == 1
    assert len(requests_to(sf, "PATCH", consumer_id, "")) == 1
    assert "salesforce_promotion_found" in sf.worker().log_tail(10_000)


def test_limit_exceeded_then_recovery(sf: SalesforceBox) -> None:
    path = sf.add_salesforce(unique("limits"), scheduled=False)
    sf.fake(
        "POST", "/_fake/faults", {"match": "GET */staged", "kind": "limit_exceeded", "count": 2}
    )
    rotate(sf, path)
    record = wait_done(sf, path)
    assert record["attempts"] == 1, "the finalize's own attempts: it ran once"
    assert_rotated(sf, path)
    history = sf.cli("history", path, "--json")
    assert "REQUEST_LIMIT_EXCEEDED" in history.stdout
    retries = [e for e in json.loads(history.stdout) if e["event"] == "step_retry"]
    assert len(retries) >= 2, "the rotation's own attempts, one retry each"


def test_propagation_delay_is_waited_out(sf: SalesforceBox) -> None:
    sf.fake("POST", "/_fake/config", {"propagation_delay": 1.5})
    path = sf.add_salesforce(unique("propagation"), scheduled=False)
    rotate(sf, path)
    wait_done(sf, path)
    assert_rotated(sf, path)
    accepted = [
        json.loads(line)
        for line in sf.worker().log_tail(10_000).splitlines()
        if '"salesforce_staged_accepted"' in line
    ]
    assert accepted and accepted[-1]["tries"] > 1


def test_finalize_twice_after_a_crash_during_finalize(sf: SalesforceBox) -> None:
    path = sf.add_salesforce(unique("finalize-twice"), scheduled=False)
    consumer_id = consumer_of(sf, path)["id"]
    sf.fake("POST", "/_fake/faults", {"match": "DELETE */staged/*", "kind": "hang", "seconds": 30})
    rotate(sf, path)
    wait_for(lambda: requests_to(sf, "DELETE", consumer_id, ""), "the revocation", sf)
    sf.worker().kill()
    assert not sf.salesforce_accepts(sf.originals[path])  # the DELETE landed
    assert status(sf, path)["state"] == "finalizing"

    sf.start_worker()
    wait_done(sf, path)
    assert_rotated(sf, path)
    assert "salesforce_finalized" in sf.worker().log_tail(10_000)
