"""The receiver app: one event per accepted delivery, duplicates dropped, refusals silent, the secret hidden."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prefect.events import Event
from pydantic import SecretStr

from parallel_tasks._logging import LOGGER_NAME
from parallel_tasks.redaction import REDACTED
from parallel_tasks.webhooks import DEFAULT_PATH, MAX_BODY_BYTES, RecentIds, create_webhook_app, event_id_for
from tests.webhooks.conftest import CANARY_SECRET, RUN, signed_headers, task_run_body


class Sink:
    """Records events; fails the first ``failures`` sends, as a Prefect server that is down would."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[Event] = []
        self.failures = failures

    async def __call__(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the Prefect server is down")
        self.events.append(event)


def client_for(sink: Sink, **options: Any) -> httpx.AsyncClient:
    app = create_webhook_app([SecretStr(CANARY_SECRET)], sink=sink, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")


@pytest.fixture
async def sink_and_client() -> AsyncIterator[tuple[Sink, httpx.AsyncClient]]:
    sink = Sink()
    async with client_for(sink) as client:
        yield sink, client


async def post(client: httpx.AsyncClient, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(DEFAULT_PATH, content=body.encode(), headers=headers or signed_headers(body))


async def test_an_accepted_delivery_becomes_one_event(sink_and_client: tuple[Sink, httpx.AsyncClient]) -> None:
    sink, client = sink_and_client
    body = task_run_body(metadata={"team": "data", "api_key": "sk-live-00112233", "note": f"x{CANARY_SECRET}"})
    headers = signed_headers(body)
    response = await post(client, body, headers)
    assert (response.status_code, response.content) == (204, b"")
    (event,) = sink.events
    assert event.event == "parallel.task-run.completed"
    assert event.id == event_id_for(headers["webhook-id"])
    assert dict(event.resource) == {
        "prefect.resource.id": f"parallel.task-run.{RUN}",
        "prefect.resource.name": RUN,
        "parallel.task-run.id": RUN,
        "parallel.task-run.status": "completed",
        "parallel.task-run.processor": "core",
    }
    assert event.payload["metadata"] == {"team": "data", "api_key": REDACTED, "note": f"x{REDACTED}"}
    assert event.payload["status"] == "completed" and event.payload["modified_at"] == "2025-08-12T10:01:00Z"


async def test_a_failed_run_gives_a_failed_event(sink_and_client: tuple[Sink, httpx.AsyncClient]) -> None:
    sink, client = sink_and_client
    body = task_run_body(status="failed", error={"ref_id": "r1", "message": "boom"})
    assert (await post(client, body)).status_code == 204
    (event,) = sink.events
    assert event.event == "parallel.task-run.failed" and event.payload["error"]["message"] == "boom"


async def test_duplicates_are_dropped_and_keep_their_event_id_after_a_restart() -> None:
    body = task_run_body()
    headers = signed_headers(body, webhook_id="msg_dup")
    first, restarted = Sink(), Sink()
    async with client_for(first) as client:
        for _ in range(3):
            assert (await post(client, body, signed_headers(body, webhook_id="msg_dup"))).status_code == 204
    async with client_for(restarted) as client:  # a new process: the window is empty, the event id is not new
        assert (await post(client, body, headers)).status_code == 204
    assert len(first.events) == len(restarted.events) == 1
    assert first.events[0].id == restarted.events[0].id == event_id_for("msg_dup")


async def test_refusals_carry_no_detail_and_make_no_event(sink_and_client: tuple[Sink, httpx.AsyncClient]) -> None:
    sink, client = sink_and_client
    body = task_run_body()
    forged = signed_headers(body, "whsec_guess")
    stale = signed_headers(body, age_s=600)
    answers = [
        await post(client, body, forged),
        await post(client, body, stale),
        await post(client, "not json"),
        await client.post(DEFAULT_PATH, content=body.encode()),  # no headers at all
    ]
    assert [(r.status_code, r.content) for r in answers] == [(401, b""), (401, b""), (400, b""), (401, b"")]
    assert sink.events == []


async def test_an_oversize_body_is_refused(sink_and_client: tuple[Sink, httpx.AsyncClient]) -> None:
    sink, client = sink_and_client
    big = task_run_body(metadata={"pad": "x" * MAX_BODY_BYTES})
    assert (await post(client, big)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(17):
            yield b"x" * 65536

    response = await client.post(DEFAULT_PATH, content=chunks(), headers=signed_headers("x"))
    assert response.status_code == 413 and sink.events == []


async def test_a_body_trickled_past_the_time_limit_is_refused() -> None:
    """A sender that stops mid-body gets a 408 once the limit passes, not a connection held without end."""
    import asyncio

    sink, stalled = Sink(), asyncio.Event()
    body = task_run_body()

    async def stalls_halfway() -> AsyncIterator[bytes]:
        yield body[:10].encode()
        await stalled.wait()  # never set: the rest never comes
        yield body[10:].encode()

    async with client_for(sink, body_timeout_s=0.2) as client:
        sending = client.post(DEFAULT_PATH, content=stalls_halfway(), headers=signed_headers(body))
        response = await asyncio.wait_for(sending, 30)  # without the limit, this is where it would hang
        assert response.status_code == 408 and sink.events == []
        assert (await post(client, body)).status_code == 204  # a body that arrives in time is taken


async def test_unknown_types_are_acknowledged_without_an_event(sink_and_client: tuple[Sink, httpx.AsyncClient]) -> None:
    sink, client = sink_and_client
    assert (await post(client, '{"type": "task_run.created", "data": {}}')).status_code == 204
    assert (await post(client, task_run_body(status="running"))).status_code == 204
    assert sink.events == []


async def test_when_the_event_cannot_be_sent_the_senders_retry_is_accepted() -> None:
    sink = Sink(failures=1)
    body = task_run_body()
    async with client_for(sink) as client:
        assert (await post(client, body, signed_headers(body, webhook_id="msg_retry"))).status_code == 503
        assert (await post(client, body, signed_headers(body, webhook_id="msg_retry"))).status_code == 204
        assert (await post(client, body, signed_headers(body, webhook_id="msg_retry"))).status_code == 204
    assert [e.id for e in sink.events] == [event_id_for("msg_retry")]


def test_the_duplicate_window_is_bounded() -> None:
    recent = RecentIds(limit=2)
    assert recent.claim("a") and recent.claim("b") and not recent.claim("a")
    assert recent.claim("c") and len(recent) == 2
    assert recent.claim("a")  # forgotten: the oldest went first


async def test_the_canary_secret_never_leaves(caplog: pytest.LogCaptureFixture) -> None:
    """Through acceptance, duplicates, every refusal and a failing sink, the secret is nowhere to be seen."""
    sink = Sink(failures=1)
    caplog.set_level(logging.DEBUG)
    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG)
    seen: list[str] = []
    body = task_run_body(metadata={"echo": CANARY_SECRET}, error={"message": CANARY_SECRET})
    async with client_for(sink) as client:
        for headers in (
            signed_headers(body, webhook_id="msg_c"),
            signed_headers(body, webhook_id="msg_c"),
            signed_headers(body, webhook_id="msg_c"),
            signed_headers(body, "whsec_wrong"),
            signed_headers(body, age_s=900),
            {"webhook-id": CANARY_SECRET, "webhook-timestamp": "1", "webhook-signature": f"v1,{CANARY_SECRET}"},
        ):
            response = await post(client, body, headers)
            seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        seen.append(repr(client._transport))
    try:
        create_webhook_app([], sink=sink)
    except Exception as error:
        seen.append("".join(traceback.format_exception(error)))
    seen += [event.model_dump_json() for event in sink.events]
    seen += [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert len(sink.events) == 1 and any("parallel.webhook.refused" in line for line in seen)
    assert not [line for line in seen if CANARY_SECRET in line]


def test_a_delivery_is_acknowledged_once_the_prefect_api_has_its_event(prefect_harness: None) -> None:
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter
    from starlette.testclient import TestClient

    body = task_run_body()
    headers = signed_headers(body)
    with TestClient(create_webhook_app([SecretStr(CANARY_SECRET)])) as receiver:  # the app's own Prefect sink
        response = receiver.post(DEFAULT_PATH, content=body.encode(), headers=headers)
    assert response.status_code == 204
    wanted = EventFilter(id=EventIDFilter(id=[event_id_for(headers["webhook-id"])]))
    deadline = time.monotonic() + 30  # the server stores what it took a moment later
    with get_client(sync_client=True) as client:
        while not (found := client.read_events(filter=wanted, limit=50).events) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert [(event.event, event.resource.id) for event in found] == [
        ("parallel.task-run.completed", f"parallel.task-run.{RUN}")
    ]


async def test_a_copy_that_arrives_while_the_first_is_being_sent_is_not_acknowledged() -> None:
    import asyncio

    class Held(Sink):
        """Holds the first send until told, then fails it, as a Prefect server that times out would."""

        def __init__(self) -> None:
            super().__init__()
            self.sending, self.finish = asyncio.Event(), asyncio.Event()

        async def __call__(self, event: Event) -> None:
            if not self.finish.is_set():
                self.sending.set()
                await self.finish.wait()
                raise ConnectionError("the Prefect server timed out")
            await super().__call__(event)

    sink = Held()
    body = task_run_body()
    headers = signed_headers(body)
    async with client_for(sink) as client:
        first = asyncio.create_task(post(client, body, headers))
        await sink.sending.wait()
        copy = await post(client, body, headers)
        assert copy.status_code == 409  # its fate is the first copy's, which is not known yet
        sink.finish.set()
        assert (await first).status_code == 503
        retried = await post(client, body, headers)
    assert retried.status_code == 204 and len(sink.events) == 1
