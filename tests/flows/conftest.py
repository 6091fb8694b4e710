"""Fixtures for flow tests: one emulator served over HTTP for the session, stored credentials,
a storage block per test, and a capture of the events the flows emit."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from parallel_tasks import ParallelCredentials
from parallel_tasks.emulator import Emulator, demo_runs, generate_runs, run_emulator_server
from tests.conftest import CANARY_KEY

FLOW_KEY = "flow-test-key-0123456789"


@pytest.fixture(scope="session")
def emulator() -> Emulator:
    return Emulator({**demo_runs(), **generate_runs(300, seed=11)}, api_keys=[FLOW_KEY, CANARY_KEY])


@pytest.fixture(scope="session")
def emulator_url(emulator: Emulator) -> Iterator[str]:
    with run_emulator_server(emulator) as base_url:
        yield base_url


@pytest.fixture
def clean_emulator(emulator: Emulator) -> Iterator[Emulator]:
    """The session emulator with its faults, log and counters cleared before and after the test."""
    emulator.set_faults(None)
    emulator.reset()
    yield emulator
    emulator.set_faults(None)
    for run_id in list(emulator._run_faults):
        emulator.set_faults(None, run_id=run_id)
    emulator.reset()


@pytest.fixture
def credentials_block(prefect_harness: None, emulator_url: str) -> str:
    name = f"emulator-{uuid.uuid4().hex[:8]}"
    ParallelCredentials(api_key=FLOW_KEY, base_url=emulator_url, max_retries=3).save(name, overwrite=True)
    return name


@pytest.fixture
def captured_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Any]]]:
    """Events sent during the test (Prefect's own through its events client, the audit's through the events
    API), also passed on to the server."""
    from prefect.events import Event
    from prefect.events.clients import AssertingPassthroughEventsClient
    from prefect.events.worker import EventsWorker

    from parallel_tasks import publishing

    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    posted: list[Event] = []
    post_events = publishing.post_events

    async def passthrough(client: Any, events: list[dict[str, Any]]) -> None:
        await post_events(client, events)
        posted.extend(Event.model_validate(event) for event in events)

    monkeypatch.setattr(publishing, "post_events", passthrough)

    def events() -> list[Any]:
        worker.wait_until_empty()
        client = worker._client
        assert isinstance(client, AssertingPassthroughEventsClient)
        return list(client.events) + posted

    try:
        yield events
    finally:
        worker.drain()
