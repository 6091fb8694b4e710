"""The two flows: fetch one run input, or audit many. ``flows/`` holds their command-line entry points.

from parallel_tasks.flows import audit_run_inputs, fetch_run_input
"""

from __future__ import annotations

import math
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from parallel_tasks.audit import (
    DEFAULT_CHUNK_TIMEOUT_S,
    BatchOptions,
    ChunkParameters,
    audit_in_batches,
    audit_in_chunks,
    audit_with_map,
    check_run_ids_are_text,
    load_run_ids,
    task_runner_from_environment,
)
from parallel_tasks.credentials import resolve_credentials
from parallel_tasks.errors import InvalidRunInputError
from parallel_tasks.ledger import AuditLedger
from parallel_tasks.manifests import write_audit_manifest
from parallel_tasks.models import AuditSummary
from parallel_tasks.openlineage import add_openlineage_inputs, with_openlineage
from parallel_tasks.publishing import SUMMARY_ARTIFACT_KEY, publish_audit
from parallel_tasks.settings import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from parallel_tasks.tasks import (
    record_task_run_input_failure,
    record_task_run_input_lineage,
    retrieve_task_run_input,
    validate_task_run_input,
)

__all__ = ["SUMMARY_ARTIFACT_KEY", "audit_run_inputs", "fetch_run_input"]


@flow(name="fetch-run-input", flow_run_name="fetch-run-input-{run_id}")
@with_openlineage
def fetch_run_input(
    run_id: str,
    credentials_block: str | None = None,
    fail_on_invalid: bool = False,
    storage_block: str | None = None,
    openlineage: bool = True,
) -> dict[str, Any]:
    """Fetch, validate and record one run input; return a summary of the record.

    Args:
        run_id: The Parallel task run id.
        credentials_block: Name of a ParallelCredentials block or of a Secret block holding the key;
            ``None`` reads ``PARALLEL_API_KEY``. The key itself is never a parameter.
        fail_on_invalid: Fail the flow run when the input breaks a validation rule.
        storage_block: Slug of a filesystem block for the records (``s3-bucket/audit``); Prefect's
            default result storage when ``None``.
        openlineage: Send OpenLineage events when the client is configured (``OPENLINEAGE_URL``, ...).
    """
    logger = get_run_logger()
    credentials = resolve_credentials(credentials_block)
    fetched = retrieve_task_run_input(run_id, credentials=credentials, return_state=True)
    if not fetched.is_completed():
        error = cast(BaseException, fetched.result(raise_on_failure=False))
        failure = record_task_run_input_failure(
            run_id, error, base_url=credentials.base_url, storage=storage_block, credentials=credentials
        )
        write_audit_manifest([failure], storage_block)
        raise error
    run_input = fetched.result()
    report = validate_task_run_input(run_input)
    record = record_task_run_input_lineage(
        run_id, run_input, report, base_url=credentials.base_url, storage=storage_block, credentials=credentials
    )
    add_openlineage_inputs([record])
    summary = {
        "run_id": run_id,
        "status": record.status,
        "processor": record.processor,
        "verdict": record.verdict,
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "sha256": record.sha256,
        "drift": record.drift,
        "record_key": record.record_key,
        "manifest_sha256": write_audit_manifest([record], storage_block),
    }
    logger.info("Recorded run %s: %s (%s), sha256 %s", run_id, record.status, record.verdict, record.sha256)
    if fail_on_invalid and not report.valid:
        # The record's findings, not the report's: the report quotes values before redaction.
        raise InvalidRunInputError(run_id, report.model_copy(update={"violations": record.violations}))
    return summary


@flow(name="audit-run-inputs", task_runner=task_runner_from_environment())
@with_openlineage
def audit_run_inputs(
    run_ids: list[str] | None = None,
    run_ids_file: str | None = None,
    credentials_block: str | None = None,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int | None = None,
    storage_block: str | None = None,
    per_run_artifacts: bool = False,
    use_map: bool = False,
    fail_on_errors: bool = True,
    chunk_size: int | None = None,
    chunk_deployment: str = "audit-run-inputs/audit-chunk",
    chunk_timeout_seconds: float = DEFAULT_CHUNK_TIMEOUT_S,
    openlineage: bool = True,
) -> State[AuditSummary]:
    """Fetch, validate and record the inputs of many runs, then publish a summary table (problems first) and a
    markdown report, with a progress bar on the run page while it runs.

    Args:
        run_ids: The run ids to audit.
        run_ids_file: A file of run ids (JSON list, or one per line), instead of or besides ``run_ids``.
        credentials_block: Name of a ParallelCredentials or Secret block; ``None`` reads ``PARALLEL_API_KEY``.
        max_concurrency: Requests in flight at once, over all batches (or mapped tasks), at most 1,000;
            with ``chunk_size``, in each chunk's flow run.
        batch_size: Runs per batch task; by default a twelfth of the runs (at least 50, at most 1,000): three
            batches for each of the four run at once, more past 12,000 runs.
        storage_block: Slug of a filesystem block for the records; Prefect's default result storage when ``None``.
        per_run_artifacts: Also create each run's markdown artifact (thousands would bury the UI).
        use_map: One task run per run id instead of batches (fine for a few hundred runs).
        fail_on_errors: End in a Failed state when any input could not be fetched or stored, or the manifest
            could not be written; the records are kept either way.
        chunk_size: Split the run ids into chunks of this size and run each as a flow run of
            ``chunk_deployment``, so several workers (on several machines) share the work; the
            results are gathered into this run's summary.
        chunk_deployment: The deployment (``flow-name/deployment-name``) that audits one chunk.
        chunk_timeout_seconds: How long to wait for the chunks (six hours by default); the chunks still
            unfinished then are cancelled, and their runs without a record count as not fetched.
        openlineage: Send OpenLineage events when the client is configured (``OPENLINEAGE_URL``, ...).
    """
    logger = get_run_logger()
    given = list(run_ids or []) + (load_run_ids(run_ids_file) if run_ids_file else [])
    distinct = list(dict.fromkeys(given))
    duplicates = len(given) - len(distinct)
    del given  # the ids are kept once: at a million runs, a second list is 8 MB
    if not distinct:
        raise ValueError("No run ids to audit: pass run_ids or run_ids_file")
    check_run_ids_are_text(distinct)
    for name, size in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if size is not None and size < 1:
            raise ValueError(f"{name} must be at least 1, got {size}")
    if not 1 <= max_concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {max_concurrency}")
    if not (math.isfinite(chunk_timeout_seconds) and chunk_timeout_seconds > 0):
        raise ValueError(f"chunk_timeout_seconds must be a positive number of seconds, got {chunk_timeout_seconds}")
    credentials = resolve_credentials(credentials_block)
    logger.info("Auditing %d runs against %s", len(distinct), credentials.base_url)
    options = BatchOptions(max_concurrency, storage_block, per_run_artifacts)
    with AuditLedger() as ledger:
        if chunk_size is not None and len(distinct) > chunk_size:
            parameters = ChunkParameters(
                credentials_block, max_concurrency, batch_size, storage_block, per_run_artifacts, openlineage
            )
            base_url = credentials.base_url
            audit_in_chunks(distinct, chunk_size, chunk_deployment, parameters, base_url, ledger, chunk_timeout_seconds)
        elif use_map:
            audit_with_map(distinct, credentials, options, ledger)
        else:
            audit_in_batches(distinct, batch_size, credentials, options, ledger)
        manifest = write_audit_manifest(ledger, storage_block)
        summary = ledger.summary(duplicates=duplicates, manifest=manifest)
        publish_audit(summary, ledger, per_run_artifacts=per_run_artifacts)
    logger.info("Audit finished: %s", summary.describe())
    if fail_on_errors and (summary.not_fetched or summary.not_stored or manifest is None):
        return Failed(message=f"{_shortfall(summary)}; {summary.describe()}", data=summary)
    return Completed(message=summary.describe(), data=summary)


def _shortfall(summary: AuditSummary) -> str:
    """What went wrong, fetching and storing told apart: ``15 of 200 runs could not be fetched``."""
    parts = []
    if summary.not_fetched:
        parts.append(f"{summary.not_fetched} of {summary.total} runs could not be fetched")
    if summary.not_stored:
        parts.append(f"{summary.not_stored} of {summary.total} runs were fetched but their records could not be stored")
    if summary.manifest_sha256 is None:
        parts.append("the audit's manifest could not be written")
    return "; ".join(parts)
