"""The emulator's state file: written off the event loop, on disk before a change is answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.local.emulator import state as state_module
from orchestrator.local.emulator.app import create_app
from orchestrator.local.emulator.delivery import Event, Target
from orchestrator.local.emulator.service import VaultService
from orchestrator.local.emulator.state import load_state

ADMIN = "adm-state-unit"
PATH = "apps/db"

Step = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def run_app(
    state_file: Path, body: Callable[[httpx.AsyncClient, VaultService], Awaitable[None]]
) -> None:
    """Run ``body`` against an in-process emulator (no lifespan: no tick, no shutdown save)."""
    app = create_app(ADMIN, state_file)
    service: VaultService = app.app.state.service  # type: ignore[attr-defined]

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://emulator", headers=headers
        ) as client:
            await body(client, service)
        await service.dispatcher.close()

    asyncio.run(main())


def on_disk(state_file: Path) -> dict[str, Any]:
    return load_state(state_file).model_dump(mode="json")


def in_memory(service: VaultService) -> dict[str, Any]:
    return service.state.model_dump(mode="json")


async def mutations(client: httpx.AsyncClient) -> list[tuple[str, httpx.Response]]:
    """One request of every kind that changes the state, in an order where each one works."""
    done: list[tuple[str, httpx.Response]] = []

    async def call(name: str, method: str, url: str, body: Any = None) -> Any:
        response = await client.request(method, url, json=body)
        assert response.status_code < 300, (name, response.text)
        done.append((name, response))
        return response.json() if response.content else None

    await call("put secret", "PUT", f"/v1/secrets/{PATH}", {"data": {"password": "x"}})
    await call("token", "POST", "/v1/_emulator/tokens", {"identity": "sa:a", "ttl": "1h"})
    policy = await call(
        "policy", "POST", "/v1/policies",
        {"name": "p", "rules": [{"path_pattern": "**", "permissions": ["read"]}]},
    )  # fmt: skip
    await call(
        "binding", "POST", f"/v1/policies/{policy['id']}/bindings",
        {"identity_type": "service_account", "identity_id": "sa:a"},
    )  # fmt: skip
    delivery = {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "whsec_x"}
    sub = await call(
        "subscription", "POST", "/v1/subscriptions",
        {"name": "s", "paths": ["**"], "events": ["none"], "delivery": delivery},
    )  # fmt: skip
    await call("unsubscribe", "DELETE", f"/v1/subscriptions/{sub['id']}")
    rotation = await call(
        "rotation policy", "POST", "/v1/rotation/policies",
        {"name": "r", "interval": "30d", "grace_period": "1h", "auto_generate": True},
    )  # fmt: skip
    await call(
        "assign", "POST", f"/v1/rotation/policies/{rotation['id']}/secrets", {"secret_path": PATH}
    )
    await call("rotate", "POST", f"/v1/secrets/{PATH}/rotate")
    await call("clock", "POST", "/v1/_emulator/clock", {"advance": "31d"})
    await call("reset", "POST", "/v1/_emulator/reset")
    return done


def test_every_change_is_on_disk_before_it_is_answered(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    seen: list[str] = []

    async def body(client: httpx.AsyncClient, service: VaultService) -> None:
        original = client.request

        async def checked(*args: Any, **kwargs: Any) -> httpx.Response:
            response = await original(*args, **kwargs)
            assert on_disk(state_file) == in_memory(service), f"{args[:2]} answered before saved"
            seen.append(f"{args[0]} {args[1]}")
            return response

        client.request = checked  # type: ignore[method-assign]
        await mutations(client)

    run_app(state_file, body)
    assert len(seen) == 11
    assert on_disk(state_file)["secrets"] == {}, "the reset itself was saved"


def test_the_file_is_written_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bool] = []
    real_write = state_module.atomic_write

    def recording_write(path: Path, content: bytes) -> None:
        try:
            asyncio.get_running_loop()
            writes.append(True)
        except RuntimeError:
            writes.append(False)
        real_write(path, content)

    monkeypatch.setattr(state_module, "atomic_write", recording_write)

    async def body(client: httpx.AsyncClient, service: VaultService) -> None:
        await mutations(client)

    run_app(tmp_path / "state.json", body)
    assert writes and not any(writes), "a state write ran on the event loop thread"


def test_concurrent_changes_all_land_in_order(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"

    async def body(client: httpx.AsyncClient, service: VaultService) -> None:
        puts = [
            client.put(f"/v1/secrets/{PATH}/{n % 5}", json={"data": {"n": n}}) for n in range(40)
        ]
        answers = await asyncio.gather(*puts)
        assert {a.status_code for a in answers} <= {200, 201}
        assert on_disk(state_file) == in_memory(service)

    run_app(state_file, body)
    saved = load_state(state_file)
    assert sum(len(r.versions) for r in saved.secrets.values()) == 40


def test_an_event_is_delivered_only_after_its_change_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real_write = state_module.atomic_write

    def slow_write(path: Path, content: bytes) -> None:
        time.sleep(0.2)  # widens the window a delivery without the gate would race into
        real_write(path, content)
        order.append("saved")

    monkeypatch.setattr(state_module, "atomic_write", slow_write)

    async def body(client: httpx.AsyncClient, service: VaultService) -> None:
        delivered = asyncio.Event()

        async def attempt(
            event: Event, target: Target, attempt: int, redelivery: bool
        ) -> tuple[int | None, float | None]:
            order.append(f"delivered {event.type}")
            delivered.set()
            return 200, None

        monkeypatch.setattr(service.dispatcher, "_attempt", attempt)
        delivery = {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "whsec_x"}
        sub = {"name": "s", "paths": ["**"], "events": ["secret.updated"], "delivery": delivery}
        assert (await client.post("/v1/subscriptions", json=sub)).status_code == 201
        order.clear()
        await client.put(f"/v1/secrets/{PATH}", json={"data": {"k": 1}})
        await asyncio.wait_for(delivered.wait(), timeout=30)

    run_app(tmp_path / "state.json", body)
    assert order == ["saved", "delivered secret.updated"]
