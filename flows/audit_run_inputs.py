"""Audit many Parallel task runs: fetch every input, validate it, record it, and summarize.

The work runs in a few batched tasks, each with one shared async client (one task per run id is
slow past a few hundred runs; ``use_map=True`` offers that shape anyway). Every run gets a record,
fetched or not, and one failing run never loses the others' records.

    python flows/audit_run_inputs.py --run-ids-file ids.txt --credentials-block parallel
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.asyncutils import run_coro_as_sync

from parallel_tasks import resolve_credentials
from parallel_tasks.lineage import build_failure_record, read_latest, resolve_storage, summarize
from parallel_tasks.manifests import write_audit_manifest
from parallel_tasks.models import AuditSummary, RunInputRecord
from parallel_tasks.tasks import (
    audit_run_inputs_batch,
    materialize_run_input_assets,
    record_task_run_input_failure,
    record_task_run_input_lineage,
    retrieve_task_run_input,
    validate_task_run_input,
)

SUMMARY_ARTIFACT_KEY = "parallel-run-input-audit"
PARALLEL_BATCHES = 4
DASK_ENV_VAR = "PARALLEL_TASKS_DASK_ADDRESS"
CHUNK_POLL_SECONDS = 2.0


def task_runner_from_environment() -> TaskRunner[Any]:
    """The task runner for the batches, chosen by configuration, not code.

    ``PARALLEL_TASKS_DASK_ADDRESS`` unset: Prefect's thread pool. ``local`` or ``local:N``: a Dask
    LocalCluster of N worker processes (2 by default). Anything else: the address of a running Dask
    scheduler (``tcp://scheduler:8786``). Dask needs the extra: ``pip install 'prefect-parallel-tasks[dask]'``.
    """
    address = os.environ.get(DASK_ENV_VAR, "").strip()
    if not address:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if address == "local" or address.startswith("local:"):
        workers = int(address.partition(":")[2] or 2)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    return DaskTaskRunner(address=address)


def load_run_ids(path: str | Path) -> list[str]:
    """Run ids from a file: a JSON list, or one id per line (blank lines and ``#`` comments skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: a JSON run-id file must hold a list of strings")
        return ids
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _distinct(run_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(run_ids))


class _Collector:
    """Gathers the outcome of each batch as it finishes: materializes its assets and logs progress
    about every 10%. A batch that broke as a whole counts as a failure of each of its runs."""

    def __init__(self, total: int, base_url: str) -> None:
        self.total, self.base_url = total, base_url
        self.records: list[RunInputRecord] = []
        self._next_progress = 10
        self._logger = get_run_logger()

    def add(self, batch: list[str], outcome: list[RunInputRecord] | BaseException, last: bool) -> None:
        if isinstance(outcome, BaseException):
            self._logger.error("A batch of %d runs failed: %s", len(batch), outcome)
            outcome = [build_failure_record(run_id, outcome, base_url=self.base_url) for run_id in batch]
        self.records += outcome
        materialize_run_input_assets(outcome, name="materialize-run-inputs")
        percent = 100 * len(self.records) // self.total
        if percent >= self._next_progress or last:
            failed = sum(r.status in ("not_found", "unauthorized", "failed") for r in self.records)
            self._logger.info(
                "Progress: %d/%d runs (%d%%), %d not fetched", len(self.records), self.total, percent, failed
            )
            self._next_progress = (percent // 10 + 1) * 10


def _batched(
    run_ids: list[str], batch_size: int | None, credentials: Any, concurrency: int, storage: str | None, artifacts: bool
) -> list[RunInputRecord]:
    """Run the batch tasks, a few at a time (``concurrency`` requests in flight over all of them).

    With Prefect's default thread-pool runner the batches share one event loop: threads each running
    a loop would only fight over the GIL. Any other runner (Dask, say) gets them through ``submit``.
    """
    size = batch_size or max(50, math.ceil(len(run_ids) / 10))
    batches = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]
    width = min(PARALLEL_BATCHES, len(batches))
    options: dict[str, Any] = {"concurrency": max(1, concurrency // width), "storage": storage, "artifacts": artifacts}
    collector = _Collector(len(run_ids), credentials.base_url)
    context = FlowRunContext.get()
    if context is None or isinstance(context.task_runner, ThreadPoolTaskRunner):
        run_coro_as_sync(_in_one_loop(batches, width, credentials, options, collector))
    else:
        _through_task_runner(batches, width, credentials, options, collector)
    return collector.records


async def _in_one_loop(
    batches: list[list[str]], width: int, credentials: Any, options: dict[str, Any], collector: _Collector
) -> None:
    limit = asyncio.Semaphore(width)

    async def run(number: int, batch: list[str]) -> tuple[list[str], Any]:
        async with limit:
            state = await audit_run_inputs_batch(batch, credentials, batch_number=number, return_state=True, **options)
        return batch, await state.aresult(raise_on_failure=False)

    pending = [run(number, batch) for number, batch in enumerate(batches, start=1)]
    for done, finished in enumerate(asyncio.as_completed(pending), start=1):
        batch, outcome = await finished
        collector.add(batch, outcome, last=done == len(batches))


def _through_task_runner(
    batches: list[list[str]], width: int, credentials: Any, options: dict[str, Any], collector: _Collector
) -> None:
    waiting = list(enumerate(batches, start=1))
    running: dict[PrefectFuture[list[RunInputRecord]], list[str]] = {}
    while waiting or running:
        while waiting and len(running) < width:
            number, batch = waiting.pop(0)
            running[audit_run_inputs_batch.submit(batch, credentials, batch_number=number, **options)] = batch
        future = next(as_completed(list(running)))
        batch = running.pop(future)
        collector.add(batch, future.result(raise_on_failure=False), last=not (waiting or running))


def _mapped(run_ids: list[str], credentials: Any, storage: str | None, artifacts: bool) -> list[RunInputRecord]:
    """One task run per run id and step (``use_map=True``)."""
    fetched = retrieve_task_run_input.map(run_ids, credentials=unmapped(credentials))
    records: list[RunInputRecord] = []
    for run_id, future in zip(run_ids, fetched, strict=True):
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            records.append(
                record_task_run_input_failure(run_id, outcome, base_url=credentials.base_url, storage=storage)
            )
            continue
        report = validate_task_run_input(outcome)
        records.append(
            record_task_run_input_lineage(
                run_id, outcome, report, base_url=credentials.base_url, storage=storage, artifacts=artifacts
            )
        )
    materialize_run_input_assets(records)
    return records


def _chunked(
    run_ids: list[str], chunk_size: int, deployment: str, child_parameters: dict[str, Any], base_url: str
) -> list[RunInputRecord]:
    """Run each chunk of run ids as a flow run of ``deployment`` (so any worker may take it), wait for
    them all, then gather every run's outcome from the record storage, the source of truth."""
    logger = get_run_logger()
    chunks = [run_ids[i : i + chunk_size] for i in range(0, len(run_ids), chunk_size)]
    children: dict[UUID, list[str]] = {}
    for number, chunk in enumerate(chunks, start=1):
        child = run_deployment(
            deployment,
            parameters={**child_parameters, "run_ids": chunk},
            flow_run_name=f"audit-chunk-{number}-of-{len(chunks)}",
            timeout=0,
        )
        children[child.id] = chunk
    logger.info("Started %d chunk flow runs of %s (%d runs each)", len(chunks), deployment, chunk_size)
    finished = _wait_for_flow_runs(list(children), logger)
    storage_block = child_parameters.get("storage_block")
    return run_coro_as_sync(_gather_outcomes(children, finished, storage_block, base_url))


def _wait_for_flow_runs(ids: list[UUID], logger: Any) -> dict[UUID, FlowRun]:
    """Poll until every flow run is in a final state, logging as chunks finish."""
    done: dict[UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        while len(done) < len(ids):
            time.sleep(CHUNK_POLL_SECONDS)
            pending = [i for i in ids if i not in done]
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=pending))):
                if run.state is not None and run.state.is_final():
                    done[run.id] = run
                    logger.info("Chunk %s finished: %s (%d/%d)", run.name, run.state.name, len(done), len(ids))
    return done


async def _gather_outcomes(
    children: dict[UUID, list[str]], finished: dict[UUID, FlowRun], storage_block: str | None, base_url: str
) -> list[RunInputRecord]:
    """Each run's latest record, if its chunk's flow run wrote it; else a failure naming the chunk."""
    storage = await resolve_storage(storage_block)
    limit = asyncio.Semaphore(64)

    async def outcome(child_id: UUID, run_id: str) -> RunInputRecord:
        async with limit:
            latest = await read_latest(storage, run_id)
        if latest is not None and latest.flow_run_id == str(child_id):
            return latest
        run = finished[child_id]
        state = run.state.name if run.state else "unknown"
        return build_failure_record(
            run_id, RuntimeError(f"chunk flow run {run.name} ended {state} without a record"), base_url=base_url
        )

    return list(await asyncio.gather(*(outcome(child, run_id) for child, ids in children.items() for run_id in ids)))


@flow(name="audit-run-inputs", task_runner=task_runner_from_environment())
def audit_run_inputs(
    run_ids: list[str] | None = None,
    run_ids_file: str | None = None,
    credentials_block: str | None = None,
    max_concurrency: int = 16,
    batch_size: int | None = None,
    storage_block: str | None = None,
    per_run_artifacts: bool = False,
    use_map: bool = False,
    fail_on_errors: bool = True,
    chunk_size: int | None = None,
    chunk_deployment: str = "audit-run-inputs/audit-chunk",
) -> State[AuditSummary]:
    """Fetch, validate and record the inputs of many runs, then publish one summary table.

    Args:
        run_ids: The run ids to audit.
        run_ids_file: A file of run ids (JSON list, or one per line), instead of or besides ``run_ids``.
        credentials_block: Name of a ParallelCredentials or Secret block; ``None`` reads ``PARALLEL_API_KEY``.
        max_concurrency: Requests in flight at once, over all batches.
        batch_size: Runs per batch task; by default about a tenth of the runs (at least 50).
        storage_block: Slug of a filesystem block for the records; Prefect's default result storage when ``None``.
        per_run_artifacts: Also create each run's markdown and metadata artifacts (thousands would bury the UI).
        use_map: One task run per run id instead of batches (fine for a few hundred runs).
        fail_on_errors: End in a Failed state when any input could not be fetched; the records are kept either way.
        chunk_size: Split the run ids into chunks of this size and run each as a flow run of
            ``chunk_deployment``, so several workers (on several machines) share the work; the
            results are gathered into this run's summary.
        chunk_deployment: The deployment (``flow-name/deployment-name``) that audits one chunk.
    """
    logger = get_run_logger()
    given = list(run_ids or []) + (load_run_ids(run_ids_file) if run_ids_file else [])
    distinct = _distinct(given)
    if not distinct:
        raise ValueError("No run ids to audit: pass run_ids or run_ids_file")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    credentials = resolve_credentials(credentials_block)
    logger.info("Auditing %d runs against %s", len(distinct), credentials.base_url)
    if chunk_size is not None and len(distinct) > chunk_size:
        child_parameters = {
            "credentials_block": credentials_block,
            "max_concurrency": max_concurrency,
            "batch_size": batch_size,
            "storage_block": storage_block,
            "per_run_artifacts": per_run_artifacts,
            "fail_on_errors": False,
        }
        records = _chunked(distinct, chunk_size, chunk_deployment, child_parameters, credentials.base_url)
    elif use_map:
        records = _mapped(distinct, credentials, storage_block, per_run_artifacts)
    else:
        records = _batched(distinct, batch_size, credentials, max_concurrency, storage_block, per_run_artifacts)
    summary = summarize(
        records, duplicates=len(given) - len(distinct), manifest=write_audit_manifest(records, storage_block)
    )
    create_table_artifact(
        summary.rows,
        key=SUMMARY_ARTIFACT_KEY,
        description=f"Audit of Parallel run inputs: {summary.describe()}",
    )
    logger.info("Audit finished: %s", summary.describe())
    if fail_on_errors and summary.not_fetched:
        return Failed(
            message=f"{summary.not_fetched} of {summary.total} runs could not be fetched; {summary.describe()}",
            data=summary,
        )
    return Completed(message=summary.describe(), data=summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_ids", nargs="*")
    parser.add_argument("--run-ids-file")
    parser.add_argument("--credentials-block")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--per-run-artifacts", action="store_true")
    args = parser.parse_args(argv)
    state = audit_run_inputs(
        run_ids=args.run_ids,
        run_ids_file=args.run_ids_file,
        credentials_block=args.credentials_block,
        max_concurrency=args.max_concurrency,
        per_run_artifacts=args.per_run_artifacts,
        return_state=True,
    )
    print(state.message)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
