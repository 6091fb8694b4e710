"""Webhooks end to end, with the real parts: ``prefect server start``, the deployments from ``setup`` (with the
``on-completion`` trigger), ``python -m parallel_tasks webhooks serve``, a process worker, and the emulator sending
signed deliveries with duplicates and forgeries. Every completed run is recorded exactly once; forgeries never
become events.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

from parallel_tasks.emulator import Emulator, WebhookSender, generate_runs
from parallel_tasks.webhooks import event_id_for
from tests.e2e.conftest import POOL, PREFECT, SetupRuns, Stack, started
from tests.e2e.test_deployments import stored_record

pytestmark = pytest.mark.e2e

ON_COMPLETION = "fetch-run-input/on-completion"
CANARY_SECRET = "whsec_e2e-canary-5d0b93a7c1f2"
RUNS = 50


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(stack.api_url) as prefect_client:
        yield prefect_client


@pytest.fixture(scope="module")
def receiver(stack: Stack, setup_runs: SetupRuns) -> Iterator[str]:
    """``webhooks serve`` on a free port, the secret in its environment only; yields the delivery URL."""
    log = stack.home / "receiver.log"
    command = [sys.executable, "-m", "parallel_tasks", "webhooks", "serve", "--port", "0"]
    env = {**stack.env, "PARALLEL_WEBHOOK_SECRET": CANARY_SECRET}
    with started(command, env, log) as process:
        deadline = time.monotonic() + 90
        while not (found := re.search(r"^(http://\S+)$", log.read_text(), re.MULTILINE)):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        url = found.group(1)
        while True:  # the URL is printed once bound; wait until it answers
            try:
                if httpx.get(url.rsplit("/webhooks/", 1)[0] + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield url


def events_since(client: SyncPrefectClient, since: datetime) -> list[dict[str, object]]:
    """Every ``parallel.task-run.completed``/``.failed`` event the server stored since ``since``, all pages."""
    names = EventNameFilter(name=["parallel.task-run.completed", "parallel.task-run.failed"])
    page = client.read_events(EventFilter(event=names, occurred=EventOccurredFilter(since=since)), limit=50)
    events = list(page.events)
    while page.next_page:
        page = client.read_events_page(str(page.next_page))
        events += page.events
    return [e.model_dump(mode="json") for e in events]


@pytest.mark.timeout(900)  # 50 flow-run processes on a shared 2-core machine
def test_completed_runs_are_recorded_once_each_and_forgeries_are_refused(
    stack: Stack, emulator: Emulator, emulator_url: str, receiver: str, client: SyncPrefectClient
) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    runs = generate_runs(RUNS, seed=16)
    emulator.store.update(runs)
    run_ids = list(runs)
    emulator.webhooks = WebhookSender(emulator.store, secret=CANARY_SECRET, url=receiver, backoff_s=0.5)
    worker_env = {**stack.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker_log = stack.home / "webhooks-worker.log"
    try:
        with started([PREFECT, "worker", "start", "--pool", POOL, "--limit", "4"], worker_env, worker_log):
            webhook_ids = []
            with httpx.Client(base_url=emulator_url, timeout=10) as admin:
                for number, run_id in enumerate(run_ids):
                    options = {
                        "status": "failed" if number % 7 == 0 else "completed",
                        "duplicate": number % 5 == 0,  # 10 of 50: 20 %
                        "bad_signature": number % 10 == 3,  # 5 of 50: 10 %
                        "stale_timestamp": number == 11,
                        "out_of_order": number % 9 == 4,
                    }
                    answer = admin.post(f"/_emulator/runs/{run_id}/complete", json=options)
                    assert answer.status_code == 202, answer.text
                    webhook_ids.append(answer.json()["webhook_id"])
            assert emulator.webhooks.wait_idle(120)
            deliveries = emulator.webhooks.log
            kinds = [(a.kind, a.status) for a in deliveries]
            assert kinds.count(("genuine", 204)) == RUNS and kinds.count(("duplicate", 204)) == 10
            assert kinds.count(("forged", 401)) == 5 and kinds.count(("stale", 401)) == 1

            deployment = client.read_deployment_by_name(ON_COMPLETION)
            only_it = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            deadline = time.monotonic() + 720
            while True:  # a run that crashed before it ran is final, until the receiver schedules it again
                flow_runs = client.read_flow_runs(deployment_filter=only_it)
                done = [r for r in flow_runs if r.state and r.state.type == StateType.COMPLETED]
                if len(done) >= RUNS:
                    break
                assert time.monotonic() < deadline, (
                    f"{len(done)} of {len(flow_runs)} flow runs completed after 720 s "
                    f"({sorted(str(r.state_name) for r in flow_runs)}):\n{worker_log.read_text()[-4000:]}"
                )
                time.sleep(2)
    finally:
        emulator.webhooks.close()
        emulator.webhooks = None

    assert len(flow_runs) == RUNS, [r.parameters for r in flow_runs]
    assert all(r.state and r.state.type == StateType.COMPLETED for r in flow_runs), [r.state for r in flow_runs]
    assert sorted(r.parameters["run_id"] for r in flow_runs) == sorted(run_ids)
    for run_id in run_ids:
        assert stored_record(stack, run_id)["status"] in ("ok", "invalid")

    events = events_since(client, since)
    assert sorted(e["id"] for e in events) == sorted(str(event_id_for(i)) for i in webhook_ids)
    forged = {str(event_id_for(a.webhook_id)) for a in deliveries if a.kind in ("forged", "stale")}
    assert forged and not forged & {e["id"] for e in events}
    failed = {e["resource"]["parallel.task-run.id"] for e in events if e["event"] == "parallel.task-run.failed"}
    assert failed == {run_ids[n] for n in range(0, RUNS, 7)}

    exposed = (stack.home / "receiver.log").read_text() + json.dumps(events)
    exposed += json.dumps([r.model_dump(mode="json") for r in flow_runs]) + worker_log.read_text()
    assert "parallel.webhook.refused" in exposed and CANARY_SECRET not in exposed
