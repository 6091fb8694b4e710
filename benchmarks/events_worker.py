"""The ceiling of (d): how fast the Prefect server stores the audit's events when nothing else runs.

Expects ``PREFECT_API_URL`` (the same server the audit flow ran on). Sends N events of the audit's own shape
(:func:`parallel_tasks.publishing.run_event` of a record, one per run id) through the audit's own
:class:`~parallel_tasks.publishing.EventBatcher`, and times it until the server has stored them all, as the
audit does before it ends. No fetching, validating or recording: the audit cannot be faster than this on
the same server, whatever the client does. Prints one JSON line.

Usage:
    python benchmarks/events_worker.py --ids-file FILE --n N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any
from uuid import uuid4

from _common import REPO, SEED, emit, peak_rss_mb, process_cpu_s, read_ids


async def send_events(run_ids: list[str]) -> tuple[int, int]:
    """One event per run id through the audit's batcher; (sent, lost)."""
    from parallel_tasks.emulator import generate_runs
    from parallel_tasks.models import TaskRunInput
    from parallel_tasks.publishing import EventBatcher, run_event
    from parallel_tasks.records import build_record
    from parallel_tasks.validation import check_task_run_input

    body = next(iter(generate_runs(1, SEED).values()))
    run_input = TaskRunInput.model_validate(body)
    template = build_record(
        run_ids[0], run_input, check_task_run_input(run_input), base_url="http://127.0.0.1", flow_run_id=str(uuid4())
    )  # a flow run related, as the audit's events have
    async with EventBatcher() as events:
        for run_id in run_ids:
            await events.add(run_event(template.model_copy(update={"run_id": run_id})))
    return events.sent, events.lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("PREFECT_API_URL must point to a running Prefect server")
    sys.path.insert(0, str(REPO))

    run_ids = read_ids(args.ids_file, args.n)
    started, cpu = time.perf_counter(), process_cpu_s()
    sent, lost = asyncio.run(send_events(run_ids))
    elapsed, cpu = time.perf_counter() - started, process_cpu_s() - cpu
    result: dict[str, Any] = {
        "runs": len(run_ids),
        "elapsed_s": elapsed,
        "rps": len(run_ids) / elapsed,
        "errors": len(run_ids) - sent + lost,
        "events": sent - lost,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_us_per_run": cpu / len(run_ids) * 1e6,
    }
    emit(result)


if __name__ == "__main__":
    main()
