"""The audit's run strategies: batches (the default), one task per run (``.map``), chunks across workers.

Each strategy fetches, validates and records every run it is given and tallies one outcome record per run,
fetched or not, into the audit's :class:`~parallel_tasks.ledger.AuditLedger` as its batches finish: one failing
run (or batch, or chunk) never loses the others' records, and the audit keeps no record per run in memory. The
flow that picks a strategy and summarizes is :func:`parallel_tasks.flows.audit_run_inputs`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, unmapped
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import OrchestrationResult
from prefect.context import AsyncClientContext, FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Cancelling
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.asyncutils import run_coro_as_sync

from parallel_tasks.credentials import ParallelCredentials
from parallel_tasks.ledger import AuditLedger
from parallel_tasks.models import NOT_FETCHED, RunInputRecord
from parallel_tasks.openlineage import add_openlineage_inputs
from parallel_tasks.publishing import AuditProgress, run_context_ids, shared_events
from parallel_tasks.records import build_failure_record, without_input
from parallel_tasks.redaction import redact_text
from parallel_tasks.settings import DASK_ENV_VAR, get_settings
from parallel_tasks.storage import read_latest, resolve_storage
from parallel_tasks.tasks import (
    audit_run_inputs_batch,
    not_stored,
    record_task_run_input_failure,
    record_task_run_input_lineage,
    retrieve_task_run_input,
    validate_task_run_input,
)

__all__ = [
    "BATCH_SIZE_MAX",
    "DASK_ENV_VAR",
    "DEFAULT_CHUNK_TIMEOUT_S",
    "BatchOptions",
    "ChunkParameters",
    "audit_in_batches",
    "audit_in_chunks",
    "audit_with_map",
    "check_run_ids_are_text",
    "default_batch_size",
    "load_run_ids",
    "tally",
    "task_runner_from_environment",
]

PARALLEL_BATCHES = 4
BATCHES_PER_SLOT = 3
"""By default the runs are cut into ``PARALLEL_BATCHES * BATCHES_PER_SLOT`` batches: a whole number of batches per
slot, so the last ones do not run alone on a fraction of the concurrency while the other slots sit idle."""
BATCH_SIZE_MAX = 1_000
"""The largest batch by default: a batch holds its records until it ends, so past 12,000 runs an audit gets more
batches, not larger ones, and its memory does not grow with its runs."""
CHUNK_POLL_SECONDS = 2.0
FLOW_RUNS_PER_READ = 200
"""Flow run ids asked for in one request (a server answers at most its own limit a request, 200 by default)."""
DEFAULT_CHUNK_TIMEOUT_S = 6 * 3600.0
"""How long an audit in chunks waits for its chunks by default: hours of work, but never forever (a chunk no
worker takes would otherwise hold the parent, and its worker slot, without end)."""


@dataclass(frozen=True)
class BatchOptions:
    """What every batch task of an audit gets besides its run ids.

    Attributes:
        concurrency: Requests in flight at once, over all batches.
        storage: Slug of a filesystem block for the records; Prefect's default result storage when ``None``.
        artifacts: Also create each run's markdown artifact.
    """

    concurrency: int
    storage: str | None = None
    artifacts: bool = False


@dataclass(frozen=True)
class ChunkParameters:
    """The parameters a chunk's flow run gets besides its run ids (never a key: parameters are stored)."""

    credentials_block: str | None
    max_concurrency: int
    batch_size: int | None
    storage_block: str | None
    per_run_artifacts: bool
    openlineage: bool = True

    def for_chunk(self, run_ids: list[str]) -> dict[str, Any]:
        return {
            "credentials_block": self.credentials_block,
            "max_concurrency": self.max_concurrency,
            "batch_size": self.batch_size,
            "storage_block": self.storage_block,
            "per_run_artifacts": self.per_run_artifacts,
            "fail_on_errors": False,
            "openlineage": self.openlineage,
            "run_ids": run_ids,
        }


def task_runner_from_environment() -> TaskRunner[Any]:
    """The task runner for the batches, chosen by configuration, not code.

    ``PARALLEL_TASKS_DASK_ADDRESS`` unset: Prefect's thread pool. ``local`` or ``local:N``: a Dask
    LocalCluster of N worker processes (2 by default). Anything else: the address of a running Dask
    scheduler (``tcp://scheduler:8786``). Dask needs the extra: ``pip install 'prefect-parallel-tasks[dask]'``.
    """
    address = get_settings().tasks_dask_address
    if not address:
        return ThreadPoolTaskRunner()
    from prefect_dask.task_runners import DaskTaskRunner

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


def check_run_ids_are_text(run_ids: list[str]) -> None:
    """Refuse, before any work, a run id that is not Unicode text (a lone surrogate, which a JSON file can hold):
    no record, manifest or event could hold it, and one such id would otherwise fail the audit at its end."""
    for number, run_id in enumerate(run_ids, start=1):
        try:
            run_id.encode("utf-8")
        except UnicodeEncodeError:
            shown = run_id.encode("utf-8", "backslashreplace").decode("utf-8")
            raise ValueError(f"run id {number} ({shown[:80]!r}) is not Unicode text (a lone surrogate)") from None


class _Collector:
    """Gathers the outcome of each batch as it finishes: moves the progress bar,
    names its problem runs and logs progress about every 10%. A batch that broke as a whole counts as a
    failure of each of its runs."""

    def __init__(self, total: int, ledger: AuditLedger, base_url: str, secrets: tuple[str, ...] = ()) -> None:
        self.total, self.ledger, self.base_url, self._secrets = total, ledger, base_url, secrets
        self._next_progress = 10
        self._logger = get_run_logger()
        self.progress = AuditProgress(total, self._logger)

    def add(self, batch: list[str], outcome: list[RunInputRecord] | BaseException, last: bool) -> None:
        if isinstance(outcome, BaseException):
            self._logger.error("A batch of %d runs failed: %s", len(batch), redact_text(str(outcome), self._secrets))
            outcome = [
                build_failure_record(run_id, outcome, base_url=self.base_url, secrets=self._secrets) for run_id in batch
            ]
        tally(self.ledger, outcome)
        self.progress.advance(len(outcome))
        self.progress.name_problems(outcome)
        done, counts = self.ledger.total, self.ledger.counts
        percent = 100 * done // self.total
        if percent >= self._next_progress or last:
            failed = sum(counts[status] for status in NOT_FETCHED)
            unstored = counts["not_stored"]
            self._logger.info(
                "Progress: %d/%d runs (%d%%), %d not fetched, %d not stored",
                done,
                self.total,
                percent,
                failed,
                unstored,
            )
            self._next_progress = (percent // 10 + 1) * 10
        if last:
            self.progress.finish()


def default_batch_size(runs: int) -> int:
    """A twelfth of the runs (three batches for each of the four at once), from 50 to :data:`BATCH_SIZE_MAX`."""
    return min(BATCH_SIZE_MAX, max(50, math.ceil(runs / (PARALLEL_BATCHES * BATCHES_PER_SLOT))))


def tally(ledger: AuditLedger, records: list[RunInputRecord]) -> None:
    """Count finished records into the audit, and report them to OpenLineage: nothing of them is kept."""
    add_openlineage_inputs(records)
    ledger.add(records)
    _unlink(records)


def _unlink(records: list[RunInputRecord]) -> None:
    """Drop the flow run's link from each record to the task that returned it. Prefect keeps one for every element
    of a task's returned list for as long as the flow runs (about 200 bytes a run), so that passing it to another
    task records the dependency; the audit passes no record on once tallied."""
    context = FlowRunContext.get()
    links = getattr(context, "run_results", None)
    if isinstance(links, dict):
        for record in records:
            links.pop(id(record), None)


def audit_in_batches(
    run_ids: list[str],
    batch_size: int | None,
    credentials: ParallelCredentials,
    options: BatchOptions,
    ledger: AuditLedger,
) -> None:
    """Run the batch tasks, a few at a time (``concurrency`` requests in flight over all of them: never
    more batches at once than ``concurrency``, each with its share of it).

    With Prefect's default thread-pool runner the batches share one event loop: threads each running
    a loop would only fight over the GIL. Any other runner (Dask, say) gets them through ``submit``.
    """
    size = batch_size or default_batch_size(len(run_ids))
    batches = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]
    width = min(PARALLEL_BATCHES, len(batches), options.concurrency)
    options = BatchOptions(max(1, options.concurrency // width), options.storage, options.artifacts)
    collector = _Collector(len(run_ids), ledger, credentials.base_url, credentials.secrets_in_use())
    context = FlowRunContext.get()
    if context is None or isinstance(context.task_runner, ThreadPoolTaskRunner):
        run_coro_as_sync(_in_one_loop(batches, width, credentials, options, collector))
    else:
        _through_task_runner(batches, width, credentials, options, collector)


async def _in_one_loop(
    batches: list[list[str]], width: int, credentials: ParallelCredentials, options: BatchOptions, collector: _Collector
) -> None:
    limit = asyncio.Semaphore(width)

    async def run(number: int, batch: list[str]) -> tuple[list[str], Any]:
        async with limit:
            state: State[list[RunInputRecord]] = await audit_run_inputs_batch(  # type: ignore[misc]
                batch,
                credentials,
                concurrency=options.concurrency,
                storage=options.storage,
                artifacts=options.artifacts,
                batch_number=number,
                return_state=True,
            )
        return batch, await state.aresult(raise_on_failure=False)

    # One Prefect client for every batch task run in this loop: each would otherwise open its own, and a client
    # costs tens of milliseconds of CPU to open (httpx loads the CA certificates even for an http:// API).
    async with AsyncClientContext.get_or_create(), shared_events():
        pending = [asyncio.ensure_future(run(number, batch)) for number, batch in enumerate(batches, start=1)]
        try:
            for done, finished in enumerate(asyncio.as_completed(pending), start=1):
                batch, outcome = await finished
                collector.add(batch, outcome, last=done == len(batches))
        finally:  # none left running past the shared client (on an error here, or a cancellation)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _through_task_runner(
    batches: list[list[str]], width: int, credentials: ParallelCredentials, options: BatchOptions, collector: _Collector
) -> None:
    waiting = list(enumerate(batches, start=1))
    running: dict[PrefectFuture[list[RunInputRecord]], list[str]] = {}
    while waiting or running:
        while waiting and len(running) < width:
            number, batch = waiting.pop(0)
            submitted = audit_run_inputs_batch.submit(  # typed as a future of a coroutine; it holds the records
                batch,
                credentials,
                concurrency=options.concurrency,
                storage=options.storage,
                artifacts=options.artifacts,
                batch_number=number,
            )
            running[cast("PrefectFuture[list[RunInputRecord]]", submitted)] = batch
        future = next(as_completed(list(running)))
        batch = running.pop(future)
        collector.add(batch, future.result(raise_on_failure=False), last=not (waiting or running))


def audit_with_map(
    run_ids: list[str], credentials: ParallelCredentials, options: BatchOptions, ledger: AuditLedger
) -> None:
    """One task run per run id and step (``use_map=True``), mapped ``options.concurrency`` run ids at a time
    (Prefect's thread pool would otherwise run every fetch at once)."""
    concurrency, storage, artifacts = options.concurrency, options.storage, options.artifacts
    progress = AuditProgress(len(run_ids), get_run_logger())
    fetched: list[PrefectFuture[Any]] = []
    for start in range(0, len(run_ids), concurrency):
        window = retrieve_task_run_input.map(run_ids[start : start + concurrency], credentials=unmapped(credentials))
        window.wait()
        fetched += window
        progress.advance(len(window))
    records = [
        _mapped_outcome(run_id, future.result(raise_on_failure=False), credentials, storage, artifacts)
        for run_id, future in zip(run_ids, fetched, strict=True)
    ]
    tally(ledger, records)
    progress.name_problems(records)
    progress.finish()


def _mapped_outcome(
    run_id: str, outcome: Any, credentials: ParallelCredentials, storage: str | None, artifacts: bool
) -> RunInputRecord:
    """Validate and record one mapped run, as a batch does: whatever breaks for this run (validation, storage)
    makes it a failed run, ``not_stored`` when even its failure cannot be written; never the end of the audit."""
    base_url = credentials.base_url
    failure: BaseException | None = outcome if isinstance(outcome, BaseException) else None
    if failure is None:
        try:
            report = validate_task_run_input(outcome)
            return record_task_run_input_lineage(
                run_id,
                outcome,
                report,
                base_url=base_url,
                storage=storage,
                artifacts=artifacts,
                credentials=credentials,
            )
        except Exception as error:
            failure = error
    try:
        return record_task_run_input_failure(
            run_id, failure, base_url=base_url, storage=storage, credentials=credentials
        )
    except Exception as error:
        ids: dict[str, Any] = {"base_url": base_url, "secrets": credentials.secrets_in_use()}
        ids["flow_run_id"], ids["task_run_id"] = run_context_ids()
        fetch_error = outcome if isinstance(outcome, BaseException) else None
        return not_stored(build_failure_record(run_id, failure, **ids), error, ids, fetch_error)


def audit_in_chunks(
    run_ids: list[str],
    chunk_size: int,
    deployment: str,
    parameters: ChunkParameters,
    base_url: str,
    ledger: AuditLedger,
    timeout_s: float = DEFAULT_CHUNK_TIMEOUT_S,
) -> None:
    """Run each chunk of run ids as a flow run of ``deployment`` (so any worker may take it), wait for
    them all (at most ``timeout_s``; the chunks still unfinished then are cancelled), then gather every
    run's outcome from the record storage, the source of truth."""
    logger = get_run_logger()
    chunks = [run_ids[i : i + chunk_size] for i in range(0, len(run_ids), chunk_size)]
    children, names, not_started = _start_chunks(chunks, deployment, parameters, logger)
    logger.info("Started %d chunk flow runs of %s (at most %d runs each)", len(children), deployment, chunk_size)
    progress = AuditProgress(len(run_ids), logger)

    def take(records: list[RunInputRecord]) -> None:
        tally(ledger, records)
        progress.name_problems(records)

    for chunk, ending in not_started:  # settled now, as failures: nothing of theirs can be stored
        take([build_failure_record(run_id, RuntimeError(ending), base_url=base_url) for run_id in chunk])
        progress.advance(len(chunk))
    endings = _wait_for_flow_runs(children, names, logger, progress, timeout_s)
    run_coro_as_sync(_gather_outcomes(children, endings, parameters.storage_block, base_url, take))
    progress.finish()


def _start_chunks(
    chunks: list[list[str]], deployment: str, parameters: ChunkParameters, logger: Any
) -> tuple[dict[UUID, list[str]], dict[UUID, str], list[tuple[list[str], str]]]:
    """Start a flow run of ``deployment`` per chunk: the run ids and the name of each one started, by its flow run
    id, and each chunk not started with how it ended.

    When a chunk cannot be started after others were, it and the chunks after it are not tried (the server
    likely refuses them all): their runs fail, naming why, and the chunks started are waited for and gathered
    as usual, so their records are not lost. When the first cannot be started, its error is raised."""
    children: dict[UUID, list[str]] = {}
    names: dict[UUID, str] = {}
    not_started: list[tuple[list[str], str]] = []
    for number, chunk in enumerate(chunks, start=1):
        name = f"audit-chunk-{number}-of-{len(chunks)}"
        if not_started:
            not_started.append((chunk, f"chunk flow run {name} was not started, after an earlier chunk could not be"))
            continue
        try:
            child: FlowRun = run_deployment(  # type: ignore[assignment]
                deployment, parameters=parameters.for_chunk(chunk), flow_run_name=name, timeout=0
            )
        except Exception as error:
            if not children:
                raise
            reason = redact_text(f"{type(error).__name__}: {error}", ())[:300]
            not_started.append((chunk, f"chunk flow run {name} could not be started ({reason})"))
            logger.error(
                "Could not start chunk %s (%s): it and the %d after it are not started, their runs fail;"
                " the %d started go on",
                name,
                reason,
                len(chunks) - number,
                len(children),
            )
        else:
            children[child.id], names[child.id] = chunk, child.name
    return children, names, not_started


def _wait_for_flow_runs(
    children: dict[UUID, list[str]], names: dict[UUID, str], logger: Any, progress: AuditProgress, timeout_s: float
) -> dict[UUID, str]:
    """Poll until every flow run is in a final state or ``timeout_s`` has passed, logging and moving the progress
    bar as chunks finish; cancel the ones still unfinished then. A poll that fails (the server restarting) is
    tried again at the next one; a chunk the server no longer has was deleted. Returns how each chunk ended, as
    a failure of one of its runs says it: ``chunk flow run <name> ended Completed``."""
    endings: dict[UUID, str] = {}
    last_seen: dict[UUID, str] = {}
    polls_failing = False

    def settle(child_id: UUID, ending: str) -> None:
        endings[child_id] = ending
        progress.advance(len(children[child_id]))

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + timeout_s
        while len(endings) < len(children) and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(CHUNK_POLL_SECONDS, remaining))
            pending = [i for i in children if i not in endings]
            try:
                runs = _read_flow_runs(client, pending)
            except Exception as error:
                if not polls_failing:
                    logger.warning("Could not read the chunks' flow runs, asking again until the deadline: %s", error)
                polls_failing = True
                continue
            polls_failing = False
            for run in runs:
                state = (run.state.name if run.state else None) or "unknown"
                last_seen[run.id] = state
                if run.state is not None and run.state.is_final():
                    settle(run.id, f"chunk flow run {run.name} ended {state}")
                    logger.info("Chunk %s finished: %s (%d/%d)", run.name, state, len(endings), len(children))
            for child_id in set(pending) - {run.id for run in runs}:  # a whole read that did not return it
                settle(child_id, _deleted(names[child_id]))
                logger.warning("Chunk %s was deleted before it finished", names[child_id])
        unfinished = {i: names[i] for i in children if i not in endings}
        if unfinished:
            for child_id, ending in _cancel(client, unfinished, last_seen, _duration(timeout_s), logger).items():
                settle(child_id, ending)  # their runs are settled too, as failures
    return endings


def _cancel(
    client: SyncPrefectClient, names: dict[UUID, str], last_seen: dict[UUID, str], waited: str, logger: Any
) -> dict[UUID, str]:
    """Cancel the chunks the audit stopped waiting for; how each ended. A chunk that finished in the meantime
    keeps its own ending; after the first error the others are not tried (the server is likely away)."""
    endings: dict[UUID, str] = {}
    counts: Counter[str] = Counter()
    error: Exception | None = None
    for child_id, name in names.items():
        seen = last_seen.get(child_id)
        still = f"still {seen} after {waited}" if seen else f"not seen finished in {waited}"
        ending, kind = f"chunk flow run {name} was {still}; not cancelled, after an error", "not cancelled"
        if error is None:
            try:
                ending, kind = _cancel_one(client, child_id, name, still, waited)
            except ObjectNotFound:
                ending, kind = _deleted(name), "deleted"
            except Exception as caught:
                error = caught
                ending, kind = f"chunk flow run {name} was {still} and could not be cancelled", "not cancelled"
        endings[child_id] = ending
        counts[kind] += 1
    first = list(names.values())[:5]
    logger.error(
        "Stopped waiting for %d chunks after %s (%s%s): %s%s",
        len(names),
        waited,
        ", ".join(first),
        ", ..." if len(names) > len(first) else "",
        ", ".join(f"{count} {kind}" for kind, count in counts.items()),
        f" ({type(error).__name__}: {error})" if error else "",
    )
    return endings


def _deleted(name: str) -> str:
    """The ending of a chunk the server no longer has, found by a poll or by a cancel alike."""
    return f"chunk flow run {name} was deleted"


def _cancel_one(client: SyncPrefectClient, child_id: UUID, name: str, still: str, waited: str) -> tuple[str, str]:
    """Ask the server to cancel one chunk: a Scheduled one is Cancelled at once, a running one Cancelling (its
    worker stops it), a finished one keeps its state. Returns its ending and the kind of outcome."""
    result: OrchestrationResult[Any] = client.set_flow_run_state(
        child_id, Cancelling(message=f"the audit stopped waiting for it after {waited}")
    )
    now = result.state.type if result.state else None
    if now == StateType.CANCELLED:
        return f"chunk flow run {name} was cancelled, {still}", "cancelled"
    if now == StateType.CANCELLING:
        return f"chunk flow run {name} was {still} and is being cancelled", "being cancelled"
    state = client.read_flow_run(child_id).state
    if state is not None and state.is_final():
        return f"chunk flow run {name} ended {state.name}", "finished meanwhile"
    reason = getattr(result.details, "reason", None)
    return f"chunk flow run {name} was {still} and could not be cancelled ({reason or result.status.value})", (
        "not cancelled"
    )


def _duration(seconds: float) -> str:
    """A timeout as a person reads it: ``90 s``, ``45 min``, ``6 h``, ``1,111.1 h``."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:,.1f}".removesuffix(".0") + " h"


def _read_flow_runs(client: SyncPrefectClient, ids: list[UUID]) -> list[FlowRun]:
    """These flow runs, asked for a page of ids at a time and read until the server has none left to give (it
    answers at most its own limit a request, 200 unless configured)."""
    runs: list[FlowRun] = []
    for start in range(0, len(ids), FLOW_RUNS_PER_READ):
        page = ids[start : start + FLOW_RUNS_PER_READ]
        wanted = FlowRunFilter(id=FlowRunFilterId(any_=page))
        got: list[FlowRun] = []
        while len(got) < len(page):
            more = client.read_flow_runs(flow_run_filter=wanted, offset=len(got))
            if not more:
                break
            got += more
        runs += got
    return runs


async def _gather_outcomes(
    children: dict[UUID, list[str]],
    endings: dict[UUID, str],
    storage_block: str | None,
    base_url: str,
    take: Callable[[list[RunInputRecord]], None],
) -> None:
    """Each run's latest record, if its chunk's flow run wrote it; else a failure naming the chunk and how it ended.
    Handed to ``take`` a chunk at a time: the audit holds one chunk's records, whatever its number of runs."""
    storage = await resolve_storage(storage_block)
    limit = asyncio.Semaphore(64)

    async def outcome(child_id: UUID, run_id: str) -> RunInputRecord:
        async with limit:
            latest = await read_latest(storage, run_id)
        if latest is not None and latest.flow_run_id == str(child_id):
            return without_input(latest)
        return build_failure_record(run_id, RuntimeError(f"{endings[child_id]}, without a record"), base_url=base_url)

    for child, ids in children.items():
        take(list(await asyncio.gather(*(outcome(child, run_id) for run_id in ids))))
