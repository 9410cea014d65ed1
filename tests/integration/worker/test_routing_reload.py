"""A running worker follows its routing file: a prefork worker routes with a changed file in
every pool process without a restart, keeps its table (loudly) while the new file is invalid,
names a rule it has not loaded in the skip reason, and takes SIGHUP as "check the file now"
instead of Celery's restart; a rotator the new file adds gets its metric series at once."""

from __future__ import annotations

import signal

import httpx
import pytest

from orchestrator.local.processes import free_port
from orchestrator.routing import NO_RULE
from tests.fixtures.worker import EngineStack

pytestmark = pytest.mark.integration

UNKNOWN = '[[rules]]\nmatch = "apps/queue/*"\nrotator = "no-such-rotator"\n'


def rotate(stack: EngineStack, path: str) -> None:
    stack.emulator.put_secret(path, {"password": "old-" + path.rsplit("/", 1)[1]})
    stack.publish(path=path, trigger="manual")


def test_every_pool_process_routes_with_the_changed_file(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule("apps/old/*"))
    worker = stack.worker(concurrency=2)

    rotate(stack, "apps/new/early")
    skipped = stack.wait_run("apps/new/early", "skipped")
    assert skipped.last_error is not None and skipped.last_error.startswith(NO_RULE)
    assert str(stack.routing_path) in skipped.last_error

    stack.routing(stack.ledger_rule("apps/old/*") + stack.ledger_rule("apps/new/*", hold=["mint"]))
    worker.wait_log("routing_reloaded", timeout=30)  # the main process saw it on its timer

    rotate(stack, "apps/new/a")
    rotate(stack, "apps/new/b")
    held = {stack.reached("mint"), stack.reached("mint")}  # both held at once: two processes
    assert len(held) == 2
    stack.release("mint")
    stack.release("mint")
    for rid in held:
        assert stack.wait_rotation(rid, "grace").rotator == "test-ledger"
    assert worker.alive and "Restarting celery worker" not in worker.log_tail(100_000)


def test_an_invalid_file_keeps_the_table_and_the_skip_says_why(engine_stack: EngineStack) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule("apps/old/*"))
    worker = stack.worker()
    stack.routing(stack.ledger_rule("apps/old/*") + UNKNOWN)
    worker.wait_log("routing_reload_rejected", timeout=30)
    assert "no-such-rotator" in worker.log_tail(10_000)

    rotate(stack, "apps/old/a")
    assert stack.wait_run("apps/old/a", "grace").rotator == "test-ledger"
    rotate(stack, "apps/queue/a")
    skipped = stack.wait_run("apps/queue/a", "skipped")
    assert skipped.last_error is not None
    assert "has rule 2 (match 'apps/queue/*')" in skipped.last_error
    assert "that file is invalid" in skipped.last_error and worker.alive


def test_sighup_checks_the_file_instead_of_restarting_the_worker(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    stack.routing(stack.ledger_rule("apps/old/*"))
    worker = stack.worker()
    worker.wait_log("routing_watched", timeout=30)
    pid = worker.pid
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGHUP)
    worker.wait_log("routing_unchanged", timeout=30)
    rotate(stack, "apps/old/b")
    assert stack.wait_run("apps/old/b", "grace").state == "grace"
    assert worker.alive and worker.pid == pid
    assert "Restarting celery worker" not in worker.log_tail(100_000)


def test_a_rotator_added_by_a_reload_has_its_failed_series_at_zero(
    engine_stack: EngineStack,
) -> None:
    stack = engine_stack
    port = free_port()
    stack.env["ROTATOR_METRICS_PORT"] = str(port)
    stack.routing(stack.ledger_rule("apps/old/*"))
    worker = stack.worker()
    failed = 'scaivault_rotator_rotations_total{outcome="failed",rotator="test-ledger-updater"}'

    def scrape() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text

    assert 'rotator="test-ledger"}' in scrape() and failed not in scrape()
    stack.routing(stack.ledger_rule("apps/old/*") + stack.ledger_rule("apps/new/*", updater=True))
    worker.wait_log("routing_reloaded", timeout=30)
    assert f"{failed} 0.0" in scrape().splitlines()
