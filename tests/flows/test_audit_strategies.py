"""The audit's strategies in parallel_tasks.audit, piece by piece: the task runner chosen by configuration, and
how the chunked audit gathers each run's outcome from the store (the chunks themselves run on a worker in the
end-to-end tests)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Crashed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from parallel_tasks import audit
from parallel_tasks.audit import _gather_outcomes, task_runner_from_environment
from parallel_tasks.emulator import Emulator
from parallel_tasks.flows import audit_run_inputs
from parallel_tasks.models import RunInputRecord
from parallel_tasks.publishing import AuditProgress
from parallel_tasks.records import build_failure_record, without_input
from parallel_tasks.settings import DASK_ENV_VAR
from parallel_tasks.storage import resolve_storage, store_record

BASE_URL = "https://api.parallel.ai"


def unserved_deployment(client: SyncPrefectClient, name: str) -> uuid.UUID:
    """A deployment of the audit flow that no worker serves: its flow runs stay as they are made."""
    return client.create_deployment(flow_id=client.create_flow_from_name("audit-run-inputs"), name=name)


def wait_in_a_flow(chunks: list[FlowRun], timeout_s: float) -> dict[uuid.UUID, str]:
    """How an audit waiting for these chunk flow runs (one run id each) sees them end, waiting inside a flow run
    as an audit does (its progress bar is an artifact of that flow run)."""

    @flow
    def audit_waiting_for_its_chunks() -> dict[uuid.UUID, str]:
        logger = logging.getLogger("test")
        return audit._wait_for_flow_runs(
            {chunk.id: [f"trun_{n:032x}"] for n, chunk in enumerate(chunks)},
            {chunk.id: chunk.name for chunk in chunks},
            logger,
            AuditProgress(len(chunks), logger),
            timeout_s=timeout_s,
        )

    return audit_waiting_for_its_chunks()


def test_the_task_runner_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DASK_ENV_VAR, raising=False)
    assert isinstance(task_runner_from_environment(), ThreadPoolTaskRunner)
    monkeypatch.setenv(DASK_ENV_VAR, "local:3")
    local = task_runner_from_environment()
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3 and local.address is None
    monkeypatch.setenv(DASK_ENV_VAR, "local")
    assert task_runner_from_environment().cluster_kwargs["n_workers"] == 2  # type: ignore[attr-defined]
    monkeypatch.setenv(DASK_ENV_VAR, " tcp://scheduler:8786 ")
    remote = task_runner_from_environment()
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://scheduler:8786"


def flow_run(name: str, state: object) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name=name, state=state)


def test_a_chunk_counts_only_the_records_it_wrote(storage: tuple[str, Path]) -> None:
    """A run's latest record counts for a chunk only when that chunk's flow run wrote it: a record left by an
    earlier audit, or none at all, makes the run a failure that names the chunk and how it ended."""
    slug, _ = storage
    first, second = flow_run("audit-chunk-1-of-2", Completed()), flow_run("audit-chunk-2-of-2", Crashed())
    written, stale, missing = "trun_written", "trun_stale", "trun_missing"

    async def scenario() -> list[object]:
        target = await resolve_storage(slug)
        for run_id, writer in ((written, first.id), (stale, uuid.uuid4())):
            record = build_failure_record(run_id, RuntimeError("gone"), base_url=BASE_URL)
            await store_record(target, record.model_copy(update={"flow_run_id": str(writer)}))
        children = {first.id: [written, stale], second.id: [missing]}
        endings = {first.id: "chunk flow run audit-chunk-1-of-2 ended Completed", second.id: "chunk flow run x ended"}
        gathered: list[RunInputRecord] = []
        await _gather_outcomes(children, endings, slug, BASE_URL, gathered.extend)
        return gathered

    by_run = {record.run_id: record for record in asyncio.run(scenario())}  # type: ignore[attr-defined]
    assert sorted(by_run) == sorted([written, stale, missing])
    assert by_run[written].flow_run_id == str(first.id) and by_run[written].error == "RuntimeError: gone"
    assert by_run[written].model_fields_set is without_input(by_run[stale]).model_fields_set  # kept as a batch keeps
    assert by_run[stale].status == "failed"
    assert "chunk flow run audit-chunk-1-of-2 ended Completed, without a record" in (by_run[stale].error or "")
    assert "chunk flow run x ended, without a record" in (by_run[missing].error or "")


def test_chunks_no_worker_takes_are_waited_for_until_the_timeout_then_cancelled_and_their_runs_fail(
    credentials_block: str, storage: tuple[str, Path]
) -> None:
    """A chunk that never runs (no worker for its deployment) holds the audit no longer than its timeout: the
    audit ends Failed naming each run as not fetched, and the chunk's flow run is cancelled, not left to run later."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
    )

    slug, _ = storage
    name = f"unserved-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        deployment_id = unserved_deployment(client, name)
    run_ids = [f"trun_{n:032x}" for n in range(3)]

    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=credentials_block,
        storage_block=slug,
        chunk_size=2,
        chunk_deployment=f"audit-run-inputs/{name}",
        chunk_timeout_seconds=1.0,
        return_state=True,
    )

    assert state.is_failed() and state.message.startswith("3 of 3 runs could not be fetched"), state.message
    summary = state.result(raise_on_failure=False)
    errors = {row["run_id"]: row["detail"] for row in summary.rows}
    assert sorted(errors) == run_ids
    assert all("was cancelled, still Scheduled after 1 s, without a record" in error for error in errors.values())
    with get_client(sync_client=True) as client:
        chunks = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
        )
    assert len(chunks) == 2 and all(run.state is not None and run.state.is_cancelled() for run in chunks)
    with get_client(sync_client=True) as client:
        made = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    (progress,) = [artifact for artifact in made if artifact.type == "progress"]
    assert progress.data == 100.0  # the runs of the cancelled chunks are settled, as failures


def test_chunks_after_one_that_cannot_be_started_fail_and_those_started_are_still_waited_for(
    credentials_block: str, storage: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses the second chunk's flow run: the first, started, is waited for and settled as usual (not
    left running unaccounted); the second's runs fail naming the refusal (credentials in it masked); the third
    is not tried, and its runs fail saying so."""
    slug, _ = storage
    name = f"refused-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        deployment_id = unserved_deployment(client, name)
    started = audit.run_deployment
    calls: list[str] = []

    def refusing_after_the_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["flow_run_name"])
        if len(calls) > 1:
            raise RuntimeError("503 from http://user:hunter2@prefect.example/api")
        return started(*args, **kwargs)

    monkeypatch.setattr(audit, "run_deployment", refusing_after_the_first)
    run_ids = [f"trun_{n:032x}" for n in range(3)]

    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=credentials_block,
        storage_block=slug,
        chunk_size=1,
        chunk_deployment=f"audit-run-inputs/{name}",
        chunk_timeout_seconds=1.0,
        return_state=True,
    )

    assert calls == ["audit-chunk-1-of-3", "audit-chunk-2-of-3"]
    assert state.is_failed() and state.message.startswith("3 of 3 runs could not be fetched"), state.message
    errors = {row["run_id"]: row["detail"] for row in state.result(raise_on_failure=False).rows}
    assert "audit-chunk-1-of-3 was cancelled, still Scheduled after 1 s, without a record" in errors[run_ids[0]]
    assert "audit-chunk-2-of-3 could not be started (RuntimeError: 503 from http://" in errors[run_ids[1]]
    assert "audit-chunk-3-of-3 was not started, after an earlier chunk could not be" in errors[run_ids[2]]
    assert "hunter2" not in json.dumps(errors)
    with get_client(sync_client=True) as client:
        (chunk,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
        )
    assert chunk.state is not None and chunk.state.is_cancelled()


def test_an_audit_whose_first_chunk_cannot_be_started_fails_with_the_error(
    credentials_block: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no deployment named audit-run-inputs/missing")

    monkeypatch.setattr(audit, "run_deployment", refusing)
    state = audit_run_inputs(
        run_ids=[f"trun_{n:032x}" for n in range(2)],
        credentials_block=credentials_block,
        chunk_size=1,
        chunk_deployment="audit-run-inputs/missing",
        return_state=True,
    )
    assert state.is_failed() and "no deployment named audit-run-inputs/missing" in str(state.message), state.message


def test_a_chunk_past_the_servers_page_of_flow_runs_is_seen_when_it_finishes(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server answers at most its limit of flow runs a request (200 here; fewer ids are asked for at once than
    that, but a server may be configured lower): with 200 chunks still waiting ahead of it, the 201st, finished,
    must still be seen as finished, not cancelled as unfinished at the timeout."""
    from prefect.states import Scheduled

    monkeypatch.setattr(audit, "FLOW_RUNS_PER_READ", 1000)  # more ids in a request than the server answers
    with get_client(sync_client=True) as client:
        deployment_id = unserved_deployment(client, f"paged-{uuid.uuid4().hex[:8]}")
        # The server answers newest first: the finished run, made first, is the one past the first 200.
        finished = client.create_flow_run_from_deployment(deployment_id, state=Completed())
        waiting = [client.create_flow_run_from_deployment(deployment_id, state=Scheduled()) for _ in range(200)]
    offered_to_cancel: list[uuid.UUID] = []
    cancel = audit._cancel

    def watched_cancel(client: Any, names: dict[uuid.UUID, str], *args: Any) -> dict[uuid.UUID, str]:
        offered_to_cancel.extend(names)
        return cancel(client, names, *args)

    monkeypatch.setattr(audit, "_cancel", watched_cancel)

    endings = wait_in_a_flow([*waiting, finished], timeout_s=1.0)
    assert endings[finished.id] == f"chunk flow run {finished.name} ended Completed"
    assert sorted(offered_to_cancel) == sorted(run.id for run in waiting)  # the finished one was seen by a poll
    assert all("was cancelled, still Scheduled after 1 s" in endings[run.id] for run in waiting)


def test_a_server_away_at_every_poll_loses_no_chunk_and_a_chunk_finished_by_then_keeps_its_ending(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls that fail (the server restarting) are tried again until the deadline, never ending the audit; then
    a chunk that finished unseen keeps its ending (cancelling it is refused), and one still waiting is cancelled."""
    import httpx
    from prefect.client.schemas.objects import StateType
    from prefect.states import Running, Scheduled

    with get_client(sync_client=True) as client:
        deployment_id = unserved_deployment(client, f"away-{uuid.uuid4().hex[:8]}")
        finished = client.create_flow_run_from_deployment(deployment_id, state=Completed())
        waiting = client.create_flow_run_from_deployment(deployment_id, state=Scheduled())
        running = client.create_flow_run_from_deployment(deployment_id, state=Running())
        deleted = client.create_flow_run_from_deployment(deployment_id, state=Scheduled())
        client.delete_flow_run(deleted.id)
    polls: list[int] = []

    def server_away(client: object, ids: list[uuid.UUID]) -> list[FlowRun]:
        polls.append(len(ids))
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(audit, "_read_flow_runs", server_away)

    endings = wait_in_a_flow([finished, waiting, running, deleted], timeout_s=1.0)
    assert polls  # it did ask, and kept going when asking failed
    assert endings == {
        finished.id: f"chunk flow run {finished.name} ended Completed",  # cancelling it was refused
        waiting.id: f"chunk flow run {waiting.name} was cancelled, not seen finished in 1 s",
        running.id: f"chunk flow run {running.name} was not seen finished in 1 s and is being cancelled",
        deleted.id: f"chunk flow run {deleted.name} was deleted",
    }
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(running.id).state.type == StateType.CANCELLING  # its worker stops it


def test_a_chunk_deleted_while_the_audit_waits_ends_the_wait_for_it(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk the server no longer has will never finish: the audit stops waiting for it at once."""
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        deployment_id = unserved_deployment(client, f"deleted-{uuid.uuid4().hex[:8]}")
        deleted = client.create_flow_run_from_deployment(deployment_id, state=Scheduled())
        client.delete_flow_run(deleted.id)
    monkeypatch.setattr(audit, "_cancel", lambda *args: pytest.fail("nothing is left to cancel"))

    assert wait_in_a_flow([deleted], timeout_s=3600) == {deleted.id: f"chunk flow run {deleted.name} was deleted"}


def test_after_a_failed_cancel_the_other_chunks_are_not_tried_and_say_so() -> None:
    """With the server away, cancelling thousands of chunks one by one would run far past the deadline."""
    from prefect.exceptions import ObjectNotFound

    attempts: list[uuid.UUID] = []
    names = {uuid.uuid4(): f"audit-chunk-{n}-of-4" for n in range(1, 5)}
    gone, away, *untried = names

    class ServerGoingAway:
        def set_flow_run_state(self, flow_run_id: uuid.UUID, state: object) -> object:
            attempts.append(flow_run_id)
            if flow_run_id == gone:
                raise ObjectNotFound(http_exc=Exception("404"))  # deleted: the next one is still tried
            raise ConnectionError("the server is away")

    last_seen = {away: "Running", untried[0]: "Pending"}
    endings = audit._cancel(ServerGoingAway(), names, last_seen, "6 h", logging.getLogger("test"))  # type: ignore[arg-type]
    assert attempts == [gone, away]
    assert [endings[i] for i in names] == [
        "chunk flow run audit-chunk-1-of-4 was deleted",
        "chunk flow run audit-chunk-2-of-4 was still Running after 6 h and could not be cancelled",
        "chunk flow run audit-chunk-3-of-4 was still Pending after 6 h; not cancelled, after an error",
        "chunk flow run audit-chunk-4-of-4 was not seen finished in 6 h; not cancelled, after an error",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.5, "0.5 s"), (90, "90 s"), (2700, "45 min"), (21600, "6 h"), (23400, "6.5 h"), (4e6, "1,111.1 h")],
)
def test_a_timeout_reads_as_a_duration(seconds: float, shown: str) -> None:
    assert audit._duration(seconds) == shown


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_a_chunk_timeout_must_be_a_positive_number_of_seconds(credentials_block: str, seconds: float) -> None:
    state = audit_run_inputs(
        run_ids=["trun_a"], credentials_block=credentials_block, chunk_timeout_seconds=seconds, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="chunk_timeout_seconds must be a positive number of seconds"):
        state.result()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chunk_size": 0}, "chunk_size must be at least 1, got 0"),
        ({"chunk_size": -1}, "chunk_size must be at least 1, got -1"),
        ({"batch_size": -1}, "batch_size must be at least 1, got -1"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ],
)
def test_a_size_below_one_is_refused_by_name(credentials_block: str, options: dict[str, int], message: str) -> None:
    """A negative chunk size used to start no chunk and end Completed with "0 runs"; now it names the parameter."""
    state = audit_run_inputs(
        run_ids=["trun_a", "trun_b"], credentials_block=credentials_block, **options, return_state=True
    )
    assert state.is_failed() and message in (state.message or "")


def test_a_run_id_that_is_not_text_is_refused_before_any_work(
    credentials_block: str, clean_emulator: Emulator, tmp_path: Path
) -> None:
    """A lone surrogate (which a JSON file can hold) could be in no record or manifest; it is named up front."""
    ids_file = tmp_path / "ids.json"
    ids_file.write_text('["trun_good1", "trun_good2", "trun_\\ud800x"]')
    state = audit_run_inputs(run_ids_file=str(ids_file), credentials_block=credentials_block, return_state=True)
    assert state.is_failed()
    assert "run id 3 ('trun_\\\\ud800x') is not Unicode text" in (state.message or "")
    assert clean_emulator.requests_by_run == {}  # nothing fetched: refused before any work


def test_an_audit_keeps_no_link_per_run_to_the_batch_that_returned_it(
    credentials_block: str, storage: tuple[str, Path], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect links every element of a task's returned list to the task run for the whole flow run; an audit of a
    million runs would keep a million such links after it dropped the records."""
    from prefect.context import FlowRunContext

    from parallel_tasks import flows

    kept: list[int] = []
    write = flows.write_audit_manifest

    def write_and_count(ledger: Any, storage_block: Any) -> str | None:
        context = FlowRunContext.get()
        assert context is not None
        kept.append(len(context.run_results))
        return write(ledger, storage_block)

    monkeypatch.setattr(flows, "write_audit_manifest", write_and_count)
    run_ids = emulator.store.ids()[:120]
    state = audit_run_inputs(
        run_ids=run_ids, credentials_block=credentials_block, storage_block=storage[0], batch_size=40, return_state=True
    )
    assert state.is_completed() and state.result().total == 120
    assert kept and kept[0] < 10  # the three batches' own results at most, none per run


def test_an_audit_in_your_own_flow_tallies_its_batches_into_one_manifest(
    credentials_block: str, storage: tuple[str, Path], emulator: Emulator
) -> None:
    """The README's example: the batch task and the ledger in a flow of your own, one manifest for all its batches."""
    from prefect import flow

    from parallel_tasks import AuditLedger, AuditSummary, audit_run_inputs_batch, write_audit_manifest

    slug, folder = storage

    @flow
    def my_audit(run_ids: list[str]) -> AuditSummary:
        with AuditLedger() as ledger:
            for start in range(0, len(run_ids), 50):
                batch = run_ids[start : start + 50]
                ledger.add(audit_run_inputs_batch.submit(batch, credentials_block, storage=slug).result())
            return ledger.summary(manifest=write_audit_manifest(ledger, slug))

    run_ids = emulator.store.ids()[:120]
    summary = my_audit(run_ids)
    assert summary.total == 120 and summary.not_fetched == 0 and summary.manifest_sha256
    (manifest,) = folder.glob(f"parallel-run-inputs/_manifests/*/*-{summary.manifest_sha256}.json")
    assert [entry[0] for entry in json.loads(manifest.read_text())["entries"]] == sorted(run_ids)


def test_the_batch_tasks_of_an_audit_share_one_prefect_client(
    credentials_block: str, storage: tuple[str, Path], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Prefect client costs tens of milliseconds of CPU to open (and a version check against the server):
    the batch tasks in the audit's loop use one, so how many client contexts are opened (each task run opens its
    own when none is shared) does not grow with the batches."""
    from prefect.context import AsyncClientContext

    opened: list[int] = []
    init = AsyncClientContext.__init__

    def counting_init(self: AsyncClientContext, *args: Any, **kwargs: Any) -> None:
        opened.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(AsyncClientContext, "__init__", counting_init)
    run_ids = emulator.store.ids()[:12]

    def clients_opened(batch_size: int) -> int:
        opened.clear()
        state = audit_run_inputs(
            run_ids=run_ids,
            credentials_block=credentials_block,
            storage_block=storage[0],
            batch_size=batch_size,
            return_state=True,
        )
        assert state.is_completed() and state.result().total == len(run_ids)
        return len(opened)

    clients_opened(batch_size=6)  # the first flow run of a process also starts Prefect's log and event services
    assert clients_opened(batch_size=1) == clients_opened(batch_size=6)  # 12 batch tasks, then 2


def test_an_audit_that_breaks_while_tallying_leaves_no_batch_task_running(
    credentials_block: str, storage: tuple[str, Path], clean_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch tasks share the loop's Prefect client: when the audit stops early, the batches still running are
    cancelled and awaited before that client closes, so none is left Running on the server (or writing on)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from parallel_tasks.emulator import FaultConfig

    def broken_add(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the ledger broke")

    monkeypatch.setattr(audit._Collector, "add", broken_add)
    run_ids = clean_emulator.store.ids()[:12]
    for run_id in run_ids[1:]:  # the first batch ends at once, while the others are still fetching
        clean_emulator.set_faults(FaultConfig(latency_ms=3000), run_id=run_id)
    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=credentials_block,
        storage_block=storage[0],
        batch_size=1,
        return_state=True,
    )
    assert state.is_failed() and "the ledger broke" in str(state.message), state.message
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    batches = [run for run in task_runs if run.name.startswith("audit-batch")]
    assert batches and all(run.state is not None and run.state.is_final() for run in batches), [
        (run.name, run.state_name) for run in batches
    ]
