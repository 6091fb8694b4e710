"""Run the audit flow in a process of its own, for the crash test (which SIGKILLs it).

    python -m tests.reliability.audit_in_subprocess IDS_FILE BATCH_SIZE MAX_CONCURRENCY

The key and the API come from ``PARALLEL_API_KEY`` / ``PARALLEL_BASE_URL``, the records go to Prefect's
default result storage (``PREFECT_LOCAL_STORAGE_PATH``), and the Prefect API is ``PREFECT_API_URL``:
the caller sets all of them. Prints the flow's final message; exits 0 when the flow completed.
"""

from __future__ import annotations

import sys

from parallel_tasks.flows import audit_run_inputs


def main(argv: list[str]) -> int:
    ids_file, batch_size, max_concurrency = argv[0], int(argv[1]), int(argv[2])
    state = audit_run_inputs(
        run_ids_file=ids_file, batch_size=batch_size, max_concurrency=max_concurrency, return_state=True
    )
    print(f"flow finished: {state.type.value}: {state.message}", flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
