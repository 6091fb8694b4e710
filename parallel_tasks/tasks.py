"""Prefect tasks for data teams to reuse: retrieve, validate and record run inputs, one or many at a time.

The tasks are thin: the HTTP client retries what the API says is worth retrying (honouring
Retry-After); Prefect's task retries sit on top as a coarse second line, only for retryable errors the
client did not already retry (retries never multiply). The logic lives in :mod:`client`, :mod:`validation`,
:mod:`records`, :mod:`storage` and :mod:`publishing`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect.utilities.asyncutils import run_coro_as_sync

from parallel_tasks.client import DEFAULT_BASE_URL, FetchResult
from parallel_tasks.credentials import ParallelCredentials, aresolve_credentials, resolve_credentials
from parallel_tasks.errors import APIError
from parallel_tasks.models import RunInputRecord, TaskRunInput, ValidationReport
from parallel_tasks.publishing import EventBatcher, audit_events, record_outcome, run_context_ids
from parallel_tasks.records import build_failure_record, build_record, without_input
from parallel_tasks.redaction import redact_text
from parallel_tasks.settings import DEFAULT_CONCURRENCY, get_settings
from parallel_tasks.storage import resolve_storage
from parallel_tasks.validation import acheck_task_run_input, check_task_run_input

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State, TaskRun
    from prefect.context import TaskRunContext
    from prefect.filesystems import WritableFileSystem
    from prefect.tasks import Task

__all__ = [
    "arecord_task_run_input_lineage",
    "aretrieve_task_run_input",
    "audit_run_inputs_batch",
    "record_task_run_input_failure",
    "record_task_run_input_lineage",
    "retrieve_task_run_input",
    "retry_even_after_client_retries",
    "retry_if_retryable",
    "run_input_cache_key",
    "validate_task_run_input",
]


def retry_if_retryable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors worth retrying that the client has not retried
    itself, so retries never multiply: a closed port costs the client's attempts, not those times the
    task's. (With ``max_retries=0`` on the client, the task's retries are the only ones.)

    A plain function on purpose: Prefect treats a ``functools.partial`` or a callable object as
    "never retry".
    """
    error = state.result(raise_on_failure=False)
    return isinstance(error, APIError) and error.retryable and error.attempts <= 1


def retry_even_after_client_retries(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Opt-in ``retry_condition_fn``: retry every error worth retrying, even one the client already retried
    to exhaustion (each task try then costs up to the client's attempts again)::

        retrieve_task_run_input.with_options(retry_condition_fn=retry_even_after_client_retries)
    """
    error = state.result(raise_on_failure=False)
    return isinstance(error, APIError) and error.retryable


def run_input_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key from (base_url, run_id), never from the credentials object or its key.

    The retrieve tasks do not persist their result (a raw input may hold secrets), so caching needs it
    switched back on, which stores raw inputs in result storage: do it only where that storage is as
    well protected as the key, for example ``retrieve_task_run_input.with_options(persist_result=True,
    cache_key_fn=run_input_cache_key, cache_expiration=timedelta(hours=1))``.
    """
    credentials = parameters.get("credentials")
    if isinstance(credentials, ParallelCredentials):
        base_url = credentials.base_url
    elif isinstance(credentials, str):
        base_url = resolve_credentials(credentials).base_url
    else:
        base_url = get_settings().base_url
    digest = hashlib.sha256(f"{base_url}\n{parameters['run_id']}".encode()).hexdigest()
    return f"parallel-run-input-{digest}"


_RETRIEVE_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_retryable,
    "task_run_name": "retrieve-input-{run_id}",
    # The fetched input is never persisted as a Prefect result: it holds whatever secrets the run was
    # started with, and the API is its source of truth. The redacted record is what gets stored.
    "persist_result": False,
}


@task(name="retrieve-task-run-input", **_RETRIEVE_OPTIONS)
def retrieve_task_run_input(run_id: str, credentials: ParallelCredentials | str | None = None) -> TaskRunInput:
    """Fetch what a Parallel task run was started with.

    Args:
        run_id: The task run id (``trun_...``).
        credentials: A ParallelCredentials block, the name of one or of a Secret block holding the
            key, or ``None`` for the ``PARALLEL_API_KEY`` environment variable. Never the key itself.

    Example:
        ```python
        from prefect import flow
        from parallel_tasks import retrieve_task_run_input

        @flow
        def show(run_id: str) -> str:
            return retrieve_task_run_input(run_id, credentials="parallel").processor
        ```
    """
    with resolve_credentials(credentials).get_client() as client:
        return client.get_task_run_input(run_id)


@task(name="retrieve-task-run-input-async", **_RETRIEVE_OPTIONS)
async def aretrieve_task_run_input(run_id: str, credentials: ParallelCredentials | str | None = None) -> TaskRunInput:
    """Async twin of :func:`retrieve_task_run_input`."""
    resolved = await aresolve_credentials(credentials)
    async with resolved.get_async_client() as client:
        return await client.get_task_run_input(run_id)


# Not persisted either: findings quote the raw input (they are redacted when the record is built).
@task(name="validate-task-run-input", task_run_name="validate-input", persist_result=False)
def validate_task_run_input(run_input: TaskRunInput) -> ValidationReport:
    """The Prefect task that checks a run input against every rule at once: a task run around the plain
    function :func:`parallel_tasks.validation.check_task_run_input`, which code outside a flow can call directly."""
    return check_task_run_input(run_input)


async def _secrets_of(credentials: ParallelCredentials | str | None) -> tuple[str, ...]:
    """The secrets a record must not hold: those of the credentials the input was fetched with
    (``None``: the environment's key, if one is set)."""
    if credentials is None and get_settings().api_key is None:
        return ()
    return (await aresolve_credentials(credentials)).secrets_in_use()


async def _record(
    run_id: str,
    run_input: TaskRunInput,
    report: ValidationReport,
    *,
    base_url: str,
    storage: WritableFileSystem | str | Path | None,
    artifacts: bool,
    credentials: ParallelCredentials | str | None,
) -> RunInputRecord:
    flow_run_id, task_run_id = run_context_ids()
    record = build_record(
        run_id,
        run_input,
        report,
        base_url=base_url,
        secrets=await _secrets_of(credentials),
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
    )
    return await record_outcome(await resolve_storage(storage), record, artifacts=artifacts)


_RECORD_OPTIONS: dict[str, Any] = {"task_run_name": "record-lineage-{run_id}", "cache_policy": NO_CACHE}


@task(name="record-task-run-input-lineage", **_RECORD_OPTIONS)
def record_task_run_input_lineage(
    run_id: str,
    run_input: TaskRunInput,
    report: ValidationReport,
    *,
    base_url: str = DEFAULT_BASE_URL,
    storage: WritableFileSystem | str | Path | None = None,
    artifacts: bool = True,
    credentials: ParallelCredentials | str | None = None,
) -> RunInputRecord:
    """Make the audit record of one input: stored JSON (redacted, hashed), its artifact, and its event (the asset
    materialization of ``parallel://task-runs/<run id>/input``).

    Args:
        run_id: The task run id.
        run_input: The fetched input.
        report: Its validation report.
        base_url: The API the input came from.
        storage: A filesystem block, block slug or path for the records; Prefect's default result
            storage when ``None``.
        artifacts: Also create the markdown artifact keyed ``parallel-run-input-<run id>`` (``_`` and
            every other character outside ``[a-z0-9-]`` as ``-``).
        credentials: The credentials the input was fetched with (as for :func:`retrieve_task_run_input`):
            their key is masked wherever it appears in the record.
    """
    return run_coro_as_sync(
        _record(
            run_id, run_input, report, base_url=base_url, storage=storage, artifacts=artifacts, credentials=credentials
        )
    )


@task(name="record-task-run-input-lineage-async", **_RECORD_OPTIONS)
async def arecord_task_run_input_lineage(
    run_id: str,
    run_input: TaskRunInput,
    report: ValidationReport,
    *,
    base_url: str = DEFAULT_BASE_URL,
    storage: WritableFileSystem | str | Path | None = None,
    artifacts: bool = True,
    credentials: ParallelCredentials | str | None = None,
) -> RunInputRecord:
    """Async twin of :func:`record_task_run_input_lineage`."""
    return await _record(
        run_id, run_input, report, base_url=base_url, storage=storage, artifacts=artifacts, credentials=credentials
    )


@task(name="record-task-run-input-failure", task_run_name="record-failure-{run_id}", cache_policy=NO_CACHE)
def record_task_run_input_failure(
    run_id: str,
    error: BaseException,
    *,
    base_url: str = DEFAULT_BASE_URL,
    storage: WritableFileSystem | str | Path | None = None,
    credentials: ParallelCredentials | str | None = None,
) -> RunInputRecord:
    """Record that a run's input could not be fetched (not_found, unauthorized or failed), with an event,
    so an audit trail has an outcome for every run it was asked about. The key of ``credentials`` is
    masked in the stored error text."""
    flow_run_id, task_run_id = run_context_ids()

    async def store() -> RunInputRecord:
        record = build_failure_record(
            run_id,
            error,
            base_url=base_url,
            secrets=await _secrets_of(credentials),
            flow_run_id=flow_run_id,
            task_run_id=task_run_id,
        )
        return await record_outcome(await resolve_storage(storage), record, artifacts=False)

    return run_coro_as_sync(store())


@task(name="audit-run-inputs-batch", task_run_name="audit-batch-{batch_number}", cache_policy=NO_CACHE)
async def audit_run_inputs_batch(
    run_ids: list[str],
    credentials: ParallelCredentials | str | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    storage: WritableFileSystem | str | Path | None = None,
    artifacts: bool = False,
    batch_number: int = 1,
) -> list[RunInputRecord]:
    """Fetch, validate and record many run inputs through one shared async client.

    Every run gets an outcome record, fetched or not; a run that fails (even in storage) never stops
    the others. Returns the outcome records (without the inputs, to keep memory small).
    """
    resolved = await aresolve_credentials(credentials)
    target = await resolve_storage(storage)
    flow_run_id, task_run_id = run_context_ids()
    outcomes: list[RunInputRecord] = []
    async with resolved.get_async_client() as client, audit_events() as events:
        ids: dict[str, Any] = {
            "base_url": client.base_url,
            "secrets": resolved.secrets_in_use(),
            "flow_run_id": flow_run_id,
            "task_run_id": task_run_id,
        }
        async for result in client.iter_task_run_inputs(run_ids, concurrency=concurrency):
            record = await _record_fetch_result(target, result, ids, artifacts, events)
            outcomes.append(without_input(record))
    return outcomes


async def _record_fetch_result(
    target: WritableFileSystem, result: FetchResult, ids: dict[str, Any], artifacts: bool, events: EventBatcher
) -> RunInputRecord:
    """Validate and record one run's outcome. Whatever breaks for this run (a bug in the validation,
    storage, publishing) makes it a failed run whose error is stored when storage still works."""
    try:
        if result.run_input is not None:
            report = await acheck_task_run_input(
                result.run_input
            )  # off the loop: a costly schema never stalls the batch
            record = build_record(result.run_id, result.run_input, report, **ids)
        else:
            record = build_failure_record(result.run_id, result.error or RuntimeError("no input"), **ids)
        return await record_outcome(target, record, artifacts=artifacts, events=events)
    except Exception as error:
        failure = build_failure_record(result.run_id, error, **ids)
    try:
        return await record_outcome(target, failure, artifacts=False, events=events)
    except Exception as error:  # storage itself is broken: the outcome is still reported in the summary
        fetch_error = None if result.run_input is not None else result.error or RuntimeError("no input")
        return not_stored(failure, error, ids, fetch_error)


def not_stored(
    failure: RunInputRecord, error: Exception, ids: dict[str, Any], fetch_error: BaseException | None
) -> RunInputRecord:
    """The outcome of a run whose record could not be written: ``not_stored`` when its input was fetched
    (``fetch_error`` is ``None``), else its fetch failure; either way the error says that nothing was stored.
    ``ids``: the keyword arguments of :func:`build_failure_record` (``base_url``, ``secrets``, ...)."""
    note = redact_text(f"its record could not be stored: {type(error).__name__}: {error}", ids["secrets"])
    if fetch_error is None:
        return failure.model_copy(update={"status": "not_stored", "error": f"input fetched, but {note}"})
    fetch_failure = build_failure_record(failure.run_id, fetch_error, **ids)
    return fetch_failure.model_copy(update={"error": f"{fetch_failure.error}; {note}"})
