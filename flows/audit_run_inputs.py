"""Audit many Parallel task runs: fetch every input, validate it, record it, and summarize.

The work runs in a few batched tasks, each with one shared async client (one task per run id is
slow past a few hundred runs; ``use_map=True`` offers that shape anyway). Every run gets a record,
fetched or not, and one failing run never loses the others' records.

    python flows/audit_run_inputs.py --run-ids-file ids.txt --credentials-block parallel
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed, State

from parallel_tasks import resolve_credentials
from parallel_tasks.lineage import build_failure_record, summarize
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


def _batched(
    run_ids: list[str], batch_size: int | None, credentials: Any, concurrency: int, storage: str | None, artifacts: bool
) -> list[RunInputRecord]:
    """Run the batch tasks, a few at a time, logging progress as each batch finishes."""
    logger = get_run_logger()
    size = batch_size or max(50, math.ceil(len(run_ids) / 10))
    batches = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]
    width = min(PARALLEL_BATCHES, len(batches))
    per_batch = max(1, concurrency // max(width, 1))
    waiting = list(enumerate(batches, start=1))
    running: dict[PrefectFuture[list[RunInputRecord]], list[str]] = {}
    records: list[RunInputRecord] = []
    next_progress = 10
    while waiting or running:
        while waiting and len(running) < width:
            number, batch = waiting.pop(0)
            future = audit_run_inputs_batch.submit(
                batch, credentials, concurrency=per_batch, storage=storage, artifacts=artifacts, batch_number=number
            )
            running[future] = batch
        future = next(as_completed(list(running)))
        batch = running.pop(future)
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):  # the whole batch broke: every run in it is a failure
            logger.error("A batch of %d runs failed: %s", len(batch), outcome)
            outcome = [build_failure_record(run_id, outcome, base_url=credentials.base_url) for run_id in batch]
        records += outcome
        materialize_run_input_assets(outcome, name="materialize-run-inputs")
        percent = 100 * len(records) // len(run_ids)
        if percent >= next_progress or not (waiting or running):
            failed = sum(r.status in ("not_found", "unauthorized", "failed") for r in records)
            logger.info("Progress: %d/%d runs (%d%%), %d not fetched", len(records), len(run_ids), percent, failed)
            next_progress = (percent // 10 + 1) * 10
    return records


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


@flow(name="audit-run-inputs")
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
    if use_map:
        records = _mapped(distinct, credentials, storage_block, per_run_artifacts)
    else:
        records = _batched(distinct, batch_size, credentials, max_concurrency, storage_block, per_run_artifacts)
    summary = summarize(records, duplicates=len(given) - len(distinct))
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
