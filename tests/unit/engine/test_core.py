"""Pure parts of the engine, the Celery configuration and the store's rules (no network)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.engine.core import REDIS_TIMEOUTS, Engine
from orchestrator.engine.ids import bound_to, manual_id, scheduled_id
from orchestrator.errors import AccessDenied, ConfigError
from orchestrator.errors import reason_of as _reason
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings
from orchestrator.state.messages import RotateRequest
from orchestrator.state.records import ACTIVE, LEASED, TERMINAL, TRANSITIONS, RunRecord, RunState
from orchestrator.worker.app import configuration
from rotators.errors import PermanentError, TransientError


def test_scheduled_ids_are_stable_per_path_and_version() -> None:
    assert scheduled_id("a/b", 3) == scheduled_id("a/b", 3)
    assert len({scheduled_id("a/b", 3), scheduled_id("a/b", 4), scheduled_id("a/c", 3)}) == 3
    assert scheduled_id("a/b", 3).startswith("rot-")


def test_manual_ids_are_fresh() -> None:
    assert len({manual_id("a/b") for _ in range(100)}) == 100


def test_a_manual_id_is_bound_to_its_path_only() -> None:
    rid = manual_id("a/b", "task-1")
    assert rid == manual_id("a/b", "task-1") and rid.startswith("rot-m")
    assert bound_to(rid, "a/b", 1, None)
    assert not bound_to(rid, "a/c", 1, None)
    assert not bound_to(manual_id("a/c", "task-1"), "a/b", 1, None)
    assert not bound_to("rot-m" + "0" * 23, "a/b", 1, None)


def test_rotate_request_defaults_match_the_task_contract() -> None:
    request = RotateRequest(path="a/b")
    assert (request.trigger, request.event_id, request.from_version) == ("schedule", None, None)
    assert request.rotation_id is None


def test_reason_is_one_bounded_line_with_the_error_class() -> None:
    exc = AccessDenied("sa:x has no 'write' permission\ntrace", code="access_denied")
    assert _reason(exc) == "AccessDenied: sa:x has no 'write' permission"
    assert len(_reason(AccessDenied("x" * 2000, code="access_denied"))) == 500
    assert _reason(PermanentError("")) == "PermanentError"


def test_reason_of_a_foreign_exception_is_its_type_and_step_only() -> None:
    exc = ValueError("invalid literal for int() with base 10: 'SENTINEL-pw'")
    assert _reason(exc, "mint") == "ValueError in step mint"
    assert _reason(RuntimeError("SENTINEL-pw")) == "RuntimeError"


def test_states_partition_and_transitions_only_name_known_states() -> None:
    assert set(ACTIVE) | set(TERMINAL) == set(RunState)
    assert not set(ACTIVE) & set(TERMINAL)
    assert set(LEASED) <= set(ACTIVE)
    assert set(TRANSITIONS) == set(RunState)
    for targets in TRANSITIONS.values():
        assert targets <= set(RunState)
    for terminal in ("done", "cancelled", "rolled_back", "skipped"):
        assert not TRANSITIONS[terminal], f"{terminal} is final"
    assert "done" in TRANSITIONS["finalizing"] and "done" not in TRANSITIONS["grace"]


def test_run_record_holds_no_secret_fields() -> None:
    fields = set(RunRecord(rotation_id="r", path="p", state="queued").to_dict())
    assert not fields & {"data", "password", "secret", "value", "new", "old"}
    assert "sealed" in fields  # a flag only


def test_celery_configuration_is_json_only_late_ack_and_no_long_waits() -> None:
    conf = configuration(Settings.load())
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_backend"] is None and conf["task_ignore_result"] is True
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    vt = conf["visibility_timeout"]
    assert vt == conf["broker_transport_options"]["visibility_timeout"]
    assert vt == conf["result_backend_transport_options"]["visibility_timeout"]
    assert vt >= 2 * conf["task_time_limit"]
    assert conf["task_default_exchange"] == "", "routing must survive a Redis flush"
    schedule = conf["beat_schedule"]
    assert {e["task"] for e in schedule.values()} == {"scaivault.sweep", "scaivault.reconcile"}
    assert schedule["sweep"]["schedule"] == 15.0


def test_visibility_timeout_must_exceed_the_task_time_limit() -> None:
    settings = Settings.load(ROTATOR_TASK_TIME_LIMIT=300, ROTATOR_VISIBILITY_TIMEOUT=400)
    with pytest.raises(ConfigError, match="ROTATOR_VISIBILITY_TIMEOUT"):
        configuration(settings)


def test_sentinel_urls_give_the_broker_the_master_name_and_keep_the_visibility_timeout() -> None:
    conf = configuration(
        Settings.load(REDIS_URL="sentinel://127.0.0.1:26379", REDIS_SENTINEL_MASTER="ha")
    )
    assert conf["broker_url"] == "sentinel://127.0.0.1:26379/0"
    options = conf["broker_transport_options"]
    assert (options["visibility_timeout"], options["master_name"]) == (3600, "ha")


def test_worker_redis_clients_time_out_and_follow_sentinel() -> None:
    settings = Settings.load(
        REDIS_URL="redis://127.0.0.1:1/0", SCAIVAULT_URL="http://127.0.0.1:1", SCAIVAULT_TOKEN="t"
    )
    engine = Engine.from_settings(settings, RoutingTable.parse("rules = []"))
    try:
        kwargs = engine.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == REDIS_TIMEOUTS["socket_timeout"]
        assert kwargs["socket_connect_timeout"] == REDIS_TIMEOUTS["socket_connect_timeout"]
        assert kwargs["health_check_interval"] == REDIS_TIMEOUTS["health_check_interval"]
    finally:
        engine.close()


def test_kombu_restores_a_dead_workers_messages_every_ten_seconds() -> None:
    options = configuration(Settings.load())["broker_transport_options"]
    assert options["unacked_restore_interval"] == 10
    assert options["unacked_restore_throttle"] == 1


def test_a_task_retry_before_a_run_record_never_counts_down_past_the_backoff_cap() -> None:
    from orchestrator.worker import tasks

    class _Task:
        name = "scaivault.rotate"
        request = SimpleNamespace(retries=0)
        countdown: float | None = None

        def retry(self, countdown: float, max_retries: None) -> Exception:
            self.countdown = countdown
            return RuntimeError("retry")

    task = _Task()
    with pytest.raises(RuntimeError, match="retry"):
        tasks._retry_unrecorded(task, TransientError("limit", retry_after=3600.0))  # type: ignore[arg-type]
    assert task.countdown == tasks.settings.rotator_retry_backoff_max
