"""The reconciliation against a real Prefect server: an event whose automation failed, or that has had no outcome
for too long, gets exactly one flow run of the deployment; an event already audited gets none.

Each test has its own deployment (no worker: its flow runs stay scheduled) and its own run ids, and asserts only
about those: other tests' events share the server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events import Event
from prefect.events.filters import EventFilter, EventIDFilter

from parallel_tasks.reconcile import idempotency_key_for, reconcile_once

LONG_AGO = timedelta(hours=1)  # a grace period no test event outlives


@pytest.fixture
async def client(prefect_harness: None) -> AsyncIterator[PrefectClient]:
    async with get_client() as prefect_client:
        yield prefect_client


@pytest.fixture
async def deployment(client: PrefectClient) -> str:
    """A deployment of its own for the test (``flow/deployment``)."""
    flow_id = await client.create_flow_from_name("fetch-run-input")
    name = f"reconcile-{uuid.uuid4().hex[:8]}"
    await client.create_deployment(flow_id, name, parameters={"credentials_block": "parallel"})
    return f"fetch-run-input/{name}"


def new_run_id() -> str:
    return f"trun_{secrets.token_hex(16)}"


async def emit(client: PrefectClient, *events: Event) -> None:
    """Post events as the receiver does, and wait until the server has stored them."""
    response = await client.request("POST", "/events", json=[e.model_dump(mode="json") for e in events])
    response.raise_for_status()
    wanted = EventFilter(id=EventIDFilter(id=[e.id for e in events]))
    deadline = time.monotonic() + 30
    while len((await client.read_events(wanted, limit=50)).events) < len(events):
        assert time.monotonic() < deadline, "the server did not store the events in 30 s"
        await asyncio.sleep(0.2)


def completed(run_id: str) -> Event:
    return Event(
        event="parallel.task-run.completed",
        resource={"prefect.resource.id": f"parallel.task-run.{run_id}", "parallel.task-run.id": run_id},
    )


def automation_outcome(outcome: str, triggering: Event) -> Event:
    """What Prefect's actions service emits when a deployment trigger's run-deployment action ends."""
    return Event(
        event=f"prefect.automation.action.{outcome}",
        resource={"prefect.resource.id": f"prefect.automation.{uuid.uuid4()}"},
        related=[
            {"prefect.resource.id": f"prefect.event.{triggering.id}", "prefect.resource.role": "triggering-event"}
        ],
        payload={"action_type": "run-deployment", "reason": "Unexpected status from 'run-deployment' action: 503"},
    )


async def flow_runs(client: PrefectClient, deployment: str, run_id: str) -> list[FlowRun]:
    target = await client.read_deployment_by_name(deployment)
    runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[target.id])))
    return [run for run in runs if run.parameters.get("run_id") == run_id]


async def test_an_event_whose_automation_failed_gets_one_flow_run(client: PrefectClient, deployment: str) -> None:
    failed_on, still_pending = completed(new_run_id()), completed(new_run_id())
    await emit(client, failed_on, still_pending, automation_outcome("failed", failed_on))

    await reconcile_once(client, deployment, reconcile_after=LONG_AGO)
    await reconcile_once(client, deployment, reconcile_after=LONG_AGO)  # the second pass finds it audited

    (flow_run,) = await flow_runs(client, deployment, failed_on.resource["parallel.task-run.id"])
    assert flow_run.idempotency_key == idempotency_key_for(failed_on.id)
    assert flow_run.parameters == {
        "credentials_block": "parallel",
        "run_id": failed_on.resource["parallel.task-run.id"],
    }
    assert await flow_runs(client, deployment, still_pending.resource["parallel.task-run.id"]) == []


async def test_an_event_with_no_outcome_is_reconciled_once_even_by_racing_passes(
    client: PrefectClient, deployment: str
) -> None:
    lost = completed(new_run_id())
    await emit(client, lost)

    racing = [reconcile_once(client, deployment, reconcile_after=timedelta(0)) for _ in range(3)]
    started = [
        run.id
        for runs in await asyncio.gather(*racing)
        for run in runs
        if run.parameters["run_id"] == lost.resource["parallel.task-run.id"]
    ]

    (flow_run,) = await flow_runs(client, deployment, lost.resource["parallel.task-run.id"])
    assert set(started) == {flow_run.id}


async def test_an_event_the_automation_audited_is_left_alone(client: PrefectClient, deployment: str) -> None:
    executed, audited = completed(new_run_id()), completed(new_run_id())
    await emit(client, executed, audited, automation_outcome("executed", executed))
    target = await client.read_deployment_by_name(deployment)
    await client.create_flow_run_from_deployment(
        target.id, parameters={"run_id": audited.resource["parallel.task-run.id"]}
    )

    await reconcile_once(client, deployment, reconcile_after=timedelta(0))

    assert await flow_runs(client, deployment, executed.resource["parallel.task-run.id"]) == []
    assert len(await flow_runs(client, deployment, audited.resource["parallel.task-run.id"])) == 1


async def test_a_flow_run_that_crashed_before_it_ran_is_scheduled_again(client: PrefectClient, deployment: str) -> None:
    from prefect.states import Crashed

    submitted = completed(new_run_id())
    await emit(client, submitted)
    target = await client.read_deployment_by_name(deployment)
    run_id = submitted.resource["parallel.task-run.id"]
    flow_run = await client.create_flow_run_from_deployment(target.id, parameters={"run_id": run_id})
    await client.set_flow_run_state(flow_run.id, Crashed(message="Failed to submit flow run: 503"), force=True)

    await reconcile_once(client, deployment, reconcile_after=timedelta(0))

    (again,) = await flow_runs(client, deployment, run_id)
    assert again.id == flow_run.id and again.state and again.state.is_scheduled()
