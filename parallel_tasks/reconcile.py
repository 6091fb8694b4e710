"""Start the on-completion flow run of every completed run whose event Prefect's automation did not turn into one.

The receiver's events reach the Prefect server (it acknowledges a delivery only then), but from there to a flow
run Prefect promises no more than one attempt: the ``run-deployment`` action of a deployment trigger that gets an
error from the API (on SQLite under load: ``database is locked``, answered 503 after the client's retries) emits
``prefect.automation.action.failed`` and is never retried, and an event or action still in the server's
in-memory queues is gone when the server restarts. Likewise a worker whose submission of the flow run gets
that 503 marks the run Crashed before it ever ran, and nothing runs it again. This closes those gaps from
outside: it reads the ``parallel.task-run.completed``/``.failed`` events of a recent window and starts the
deployment for each one that has no flow run for its run id since it occurred, once the automation has failed on
it, or once it is older than :data:`RECONCILE_AFTER` with no outcome at all; and when the event's only flow runs
crashed without ever running, it schedules the latest again, as ``prefect flow-run retry`` does. The flow run's
idempotency key is the event's id, so two reconcilers (or two passes) racing on one event still make a single
flow run.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from parallel_tasks._logging import get_logger
from parallel_tasks._urls import validate_run_id
from parallel_tasks.errors import InvalidRunIdError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.events.filters import EventFilter
    from prefect.events.schemas.events import ReceivedEvent

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "LOOKBACK",
    "RECONCILE_AFTER",
    "idempotency_key_for",
    "reconcile_forever",
    "reconcile_once",
]

DEFAULT_DEPLOYMENT = "fetch-run-input/on-completion"
LOOKBACK = timedelta(hours=1)
"""How far back each pass looks: well past :data:`RECONCILE_AFTER`, and no further, as each pass reads it all.
(While the receiver is down no event is made at all: Parallel keeps retrying its deliveries.)"""
RECONCILE_AFTER = timedelta(minutes=15)
"""How long an event may have neither a flow run nor an automation outcome before it is deemed lost. A failed
action is acted on at once; an action still queued or retrying (minutes under load) is given this long."""
CLOCK_SKEW = timedelta(minutes=1)
"""A flow run counts for an event if it was created at most this long before the event (receiver and server
clocks may differ)."""

_EVENT_NAMES = ["parallel.task-run.completed", "parallel.task-run.failed"]
_ACTION_OUTCOMES = ["prefect.automation.action.executed", "prefect.automation.action.failed"]
_PAGE = 200
_EVENTS_PAGE = 50  # the most the events API returns at once


def idempotency_key_for(event_id: object) -> str:
    """The idempotency key of the flow run started for an event: one event, at most one reconciled flow run."""
    return f"parallel.task-run-event.{event_id}"


async def _events(client: PrefectClient, wanted: EventFilter) -> list[ReceivedEvent]:
    """Every event matching ``wanted``, all pages."""
    page = await client.read_events(wanted, limit=_EVENTS_PAGE)
    events = list(page.events)
    while page.next_page:
        page = await client.read_events_page(str(page.next_page))
        events += page.events
    return events


async def _flow_runs(client: PrefectClient, deployment_id: object, since: datetime) -> dict[str, list[FlowRun]]:
    """The deployment's flow runs expected to start since ``since``, by run id."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    only_it = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    recent = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since))
    by_run_id: dict[str, list[FlowRun]] = defaultdict(list)
    offset = 0
    while True:
        runs = await client.read_flow_runs(
            deployment_filter=only_it, flow_run_filter=recent, limit=_PAGE, offset=offset
        )
        for run in runs:
            run_id = (run.parameters or {}).get("run_id")
            if isinstance(run_id, str):
                by_run_id[run_id].append(run)
        if len(runs) < _PAGE:
            return by_run_id
        offset += _PAGE


async def _outcomes(client: PrefectClient, events: Iterable[ReceivedEvent], since: datetime) -> dict[str, set[str]]:
    """The automation outcomes (``prefect.automation.action.executed``/``.failed``) each event led to, by the
    triggering event's resource id (``prefect.event.<id>``)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    ids = [f"prefect.event.{event.id}" for event in events]
    outcomes: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(ids), _PAGE):  # a bounded filter per request
        wanted = EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=_ACTION_OUTCOMES),
            related=EventRelatedFilter(id=ids[start : start + _PAGE], role=["triggering-event"]),
        )
        for outcome in await _events(client, wanted):
            for related in outcome.related:
                if related.role == "triggering-event":
                    outcomes[related.id].add(outcome.event.rpartition(".")[2])
    return outcomes


async def reconcile_once(
    client: PrefectClient,
    deployment: str = DEFAULT_DEPLOYMENT,
    *,
    lookback: timedelta = LOOKBACK,
    reconcile_after: timedelta = RECONCILE_AFTER,
    now: datetime | None = None,
) -> list[FlowRun]:
    """One pass: start ``deployment`` (``flow/deployment``) for each lost event of the last ``lookback``.

    An event is lost when no flow run of the deployment has its run id since it occurred, its automation did not
    report the flow run started, and either the automation reported failing or ``reconcile_after`` has passed.
    An event whose flow runs all crashed before they ran gets the latest scheduled again.
    Returns the flow runs started or scheduled again (an event already reconciled by another pass gets its
    existing flow run back).
    """
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    now = now or datetime.now(timezone.utc)
    since = now - lookback
    target = await client.read_deployment_by_name(deployment)
    wanted = EventFilter(occurred=EventOccurredFilter(since=since, until=now), event=EventNameFilter(name=_EVENT_NAMES))
    events = await _events(client, wanted)
    if not events:
        return []
    flow_runs = await _flow_runs(client, target.id, since - CLOCK_SKEW)
    unaudited, crashed = [], {}
    for event in events:
        runs = [
            r for r in flow_runs.get(_run_id(event) or "", []) if r.created and r.created >= event.occurred - CLOCK_SKEW
        ]
        if not runs:
            unaudited.append(event)
        elif all(_never_ran(r) for r in runs):
            latest = max(runs, key=lambda r: r.created or now)
            crashed[latest.id] = latest
    started = [await _run_again(client, flow_run) for flow_run in crashed.values()]
    if not unaudited:
        return started
    outcomes = await _outcomes(client, unaudited, since)
    for event in unaudited:
        outcome = outcomes.get(f"prefect.event.{event.id}", set())
        run_id = _run_id(event)
        if run_id is None or "executed" in outcome:
            continue
        if "failed" not in outcome and event.occurred > now - reconcile_after:
            continue  # the automation may still be on it
        flow_run = await client.create_flow_run_from_deployment(
            target.id, parameters={"run_id": run_id}, idempotency_key=idempotency_key_for(event.id)
        )
        get_logger().warning(
            "parallel.webhook.reconciled",
            run_id=run_id,
            prefect_event_id=str(event.id),
            automation="failed" if outcome else "no outcome",
            flow_run_id=str(flow_run.id),
        )
        started.append(flow_run)
    return started


def _never_ran(flow_run: FlowRun) -> bool:
    """Crashed before its flow started (a failed submission): running it again cannot repeat anything."""
    from prefect.client.schemas.objects import StateType

    return flow_run.state_type == StateType.CRASHED and flow_run.run_count == 0


async def _run_again(client: PrefectClient, flow_run: FlowRun) -> FlowRun:
    """Schedule a crashed flow run again, for its work pool's workers to pick up."""
    from prefect.states import Scheduled

    await client.set_flow_run_state(flow_run.id, Scheduled(message="Rescheduled: it crashed before it ran"), force=True)
    run_id = flow_run.parameters.get("run_id")
    get_logger().warning("parallel.webhook.rescheduled", run_id=run_id, flow_run_id=str(flow_run.id))
    return flow_run


def _run_id(event: ReceivedEvent) -> str | None:
    """The event's run id, if it is one a flow run may be given."""
    try:
        return validate_run_id(event.resource.get("parallel.task-run.id"))
    except InvalidRunIdError:
        return None


async def reconcile_forever(every_s: float, deployment: str = DEFAULT_DEPLOYMENT) -> None:
    """:func:`reconcile_once` every ``every_s`` seconds until cancelled; a failed pass is logged and the next
    one tries again (the idempotency keys make a repeated attempt harmless)."""
    from prefect.client.orchestration import get_client

    logger = get_logger()
    async with get_client() as client:
        while True:
            try:
                await reconcile_once(client, deployment)
            except Exception as error:
                logger.error("parallel.webhook.reconcile_failed", deployment=deployment, error=type(error).__name__)
            await asyncio.sleep(every_s)
