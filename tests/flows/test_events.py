"""The audit's events reach the Prefect server and are stored, paced so the server never drops them; events it
never stores are counted and said."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from parallel_tasks import publishing
from parallel_tasks.publishing import EventBatcher, count_stored_events, run_event
from parallel_tasks.records import build_failure_record

pytestmark = pytest.mark.usefixtures("prefect_harness")


def events_of(count: int, prefix: str) -> list[dict[str, Any]]:
    records = [
        build_failure_record(f"trun_{prefix}{n:06d}", RuntimeError("gone"), base_url="http://x") for n in range(count)
    ]
    return [run_event(record) for record in records]


async def test_every_event_is_stored_before_the_batcher_is_done() -> None:
    sent = events_of(1_250, "stored")  # more requests than may go unconfirmed
    async with EventBatcher() as batcher:
        for event in sent:
            await batcher.add(event)
    assert (batcher.sent, batcher.lost) == (1_250, 0)
    async with EventBatcher() as reader:
        assert reader._client is not None
        assert await count_stored_events(reader._client, sent) == 1_250


async def test_events_the_server_never_stores_are_counted_lost_and_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def dropped(client: Any, events: list[dict[str, Any]]) -> None:
        """The server answers, then drops them (its in-memory queue full)."""

    monkeypatch.setattr(publishing, "post_events", dropped)
    monkeypatch.setattr(publishing, "CONFIRM_TIMEOUT_S", 0.3)
    caplog.set_level(logging.WARNING, logger="parallel_tasks.publishing")
    async with EventBatcher() as batcher:
        for event in events_of(450, "dropped"):
            await batcher.add(event)
    assert (batcher.sent, batcher.lost) == (450, 450)
    said = [r.getMessage() for r in caplog.records if "did not reach Prefect" in r.getMessage()]
    assert said and sum(int(message.split()[0]) for message in said) == 450


async def test_batches_sharing_the_audits_batcher_send_each_event_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch tasks of an audit add to one batcher at once: each event goes out once, in requests no larger
    than one batch, and the batcher is done only when the server has stored them all."""
    posted: list[int] = []
    real_post = publishing.post_events

    async def counted(client: Any, events: list[dict[str, Any]]) -> None:
        posted.append(len(events))
        await real_post(client, events)

    monkeypatch.setattr(publishing, "post_events", counted)
    batches = [events_of(430, f"shared{b}") for b in range(4)]

    async def one_batch(events: list[dict[str, Any]]) -> None:
        async with publishing.audit_events() as shared:
            assert shared is batcher
            for event in events:
                await shared.add(event)
                await asyncio.sleep(0)  # the batches take turns, as their fetches do

    async with publishing.shared_events() as batcher:
        await asyncio.gather(*(one_batch(events) for events in batches))
    everything = [event for events in batches for event in events]
    assert (batcher.sent, batcher.lost) == (1_720, 0)
    assert sum(posted) == 1_720 and max(posted) <= publishing.EVENTS_PER_REQUEST
    async with EventBatcher() as reader:
        assert reader._client is not None
        assert await count_stored_events(reader._client, everything) == 1_720
    async with publishing.audit_events() as own:  # outside an audit: a batcher of its own
        assert own is not batcher
