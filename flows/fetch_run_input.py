"""Fetch one Parallel task run's input, validate it, and record its audit trail.

Run it against the real API with a key in the environment::

    PARALLEL_API_KEY=... python flows/fetch_run_input.py trun_...

or with a stored ParallelCredentials block: ``python flows/fetch_run_input.py trun_... --credentials-block parallel``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefect import flow, get_run_logger

from parallel_tasks import InvalidRunInputError, resolve_credentials
from parallel_tasks.manifests import write_audit_manifest
from parallel_tasks.tasks import (
    materialize_run_input_assets,
    record_task_run_input_failure,
    record_task_run_input_lineage,
    retrieve_task_run_input,
    validate_task_run_input,
)


@flow(name="fetch-run-input", flow_run_name="fetch-run-input-{run_id}")
def fetch_run_input(
    run_id: str,
    credentials_block: str | None = None,
    fail_on_invalid: bool = False,
    storage_block: str | None = None,
) -> dict[str, Any]:
    """Fetch, validate and record one run input; return a summary of the record.

    Args:
        run_id: The Parallel task run id.
        credentials_block: Name of a ParallelCredentials block or of a Secret block holding the key;
            ``None`` reads ``PARALLEL_API_KEY``. The key itself is never a parameter.
        fail_on_invalid: Fail the flow run when the input breaks a validation rule.
        storage_block: Slug of a filesystem block for the records (``s3-bucket/audit``); Prefect's
            default result storage when ``None``.
    """
    logger = get_run_logger()
    credentials = resolve_credentials(credentials_block)
    fetched = retrieve_task_run_input(run_id, credentials=credentials, return_state=True)
    if not fetched.is_completed():
        error = fetched.result(raise_on_failure=False)
        failure = record_task_run_input_failure(run_id, error, base_url=credentials.base_url, storage=storage_block)
        write_audit_manifest([failure], storage_block)
        raise error
    run_input = fetched.result()
    report = validate_task_run_input(run_input)
    record = record_task_run_input_lineage(
        run_id, run_input, report, base_url=credentials.base_url, storage=storage_block
    )
    materialize_run_input_assets([record], name="materialize-run-input")
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
        raise InvalidRunInputError(run_id, report)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--credentials-block", default=None)
    parser.add_argument("--storage-block", default=None)
    parser.add_argument("--fail-on-invalid", action="store_true")
    args = parser.parse_args(argv)
    summary = fetch_run_input(
        args.run_id,
        credentials_block=args.credentials_block,
        fail_on_invalid=args.fail_on_invalid,
        storage_block=args.storage_block,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
