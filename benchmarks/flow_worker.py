"""(d) The audit flow end to end, in a process of its own, against an already-running Prefect server.

Expects ``PREFECT_API_URL`` (the server) and ``PREFECT_LOCAL_STORAGE_PATH`` (a fresh directory for
the records) in the environment. Saves a ``ParallelCredentials`` block for the emulator, then times
``audit_run_inputs`` over the first N run ids: every run fetched, validated and recorded, per-run
artifacts off (the audit's default). Checks, after the timed part, that every run has its ``latest.json``
record and its event on the server (its asset materialization, or ``parallel.task-run.input.failed``), and
prints one JSON line.

The fetch latencies come from wrapping ``AsyncParallelClient.fetch`` in this process (an append to an array
of doubles per request); the library itself is unchanged. While the flow runs, the worker keeps nothing per
run but that array (8 bytes a run): the run ids are read back from their file for the checks afterwards, so the
RSS sampled from outside is the audit's.

Usage:
    python benchmarks/flow_worker.py --base-url URL --ids-file FILE --n N --concurrency C --block NAME
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import API_KEY, REPO, emit, peak_rss_mb, percentile, process_cpu_s, read_ids


def record_fetch_latencies(sink: array[float]) -> None:
    """Wrap ``AsyncParallelClient.fetch`` so each fetch's ``elapsed_ms`` lands in ``sink``."""
    from parallel_tasks.client import AsyncParallelClient, FetchResult

    original = AsyncParallelClient.fetch

    async def fetch(self: AsyncParallelClient, run_id: str, *, quiet: bool = False) -> FetchResult:
        result = await original(self, run_id, quiet=quiet)
        sink.append(result.elapsed_ms / 1000)
        return result

    AsyncParallelClient.fetch = fetch  # type: ignore[method-assign]


def events_on_server(flow_run_id: str, expected: int, since: str, timeout: float = 180) -> int:
    """How many per-run events the server holds for the flow run, once it has ``expected`` (it writes them to its
    database a moment after taking them) or when ``timeout`` runs out."""
    from prefect.client.orchestration import get_client

    names = ["prefect.asset.materialization.succeeded", "parallel.task-run.input.failed"]
    body = {
        "filter": {
            "event": {"name": names},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            "occurred": {"since": since},
        },
    }
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            counts = client.request("POST", "/events/count-by/event", json=body).json()
            found = sum(row["count"] for row in counts)
            if found >= expected or time.monotonic() > deadline:
                return int(found)
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--block", required=True, help="name for the ParallelCredentials block")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("PREFECT_API_URL must point to a running Prefect server")

    sys.path.insert(0, str(REPO))
    from parallel_tasks import ParallelCredentials
    from parallel_tasks.flows import audit_run_inputs
    from parallel_tasks.lineage import latest_key
    from parallel_tasks.models import AuditSummary

    # From a file, as the deployments give them: 100,000 ids as a parameter are more than the API takes.
    ids_file = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"]).with_suffix(".ids")
    ids_file.write_text("\n".join(read_ids(args.ids_file, args.n)) + "\n")
    ParallelCredentials(api_key=API_KEY, base_url=args.base_url).save(args.block, overwrite=True)
    latencies: array[float] = array("d")
    record_fetch_latencies(latencies)

    since = datetime.now(timezone.utc).isoformat()
    started_at, started, cpu = time.time(), time.perf_counter(), process_cpu_s()
    state = audit_run_inputs(
        run_ids_file=str(ids_file), credentials_block=args.block, max_concurrency=args.concurrency, return_state=True
    )
    elapsed, cpu = time.perf_counter() - started, process_cpu_s() - cpu

    summary = state.result(raise_on_failure=False)
    ids = ids_file.read_text().split()
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    recorded = sum((storage / latest_key(run_id)).is_file() for run_id in ids)
    events = events_on_server(str(state.state_details.flow_run_id), len(ids), since)
    if not isinstance(summary, AuditSummary):
        raise RuntimeError(f"the flow ended {state.type.value} without a summary: {state.message}")
    result: dict[str, Any] = {
        "runs": len(ids),
        "started_at": started_at,  # wall clock, for RSS sampled from outside (audit_scale.py)
        "elapsed_s": elapsed,
        "rps": len(ids) / elapsed,
        "p50_ms": (percentile(latencies, 0.5) or 0) * 1000 if latencies else None,
        "p95_ms": (percentile(latencies, 0.95) or 0) * 1000 if latencies else None,
        "errors": summary.not_fetched + len(ids) - recorded + len(ids) - events,
        "state": state.type.value,
        "counts": summary.counts,
        "recorded": recorded,
        "events": events,
        "fetches": len(latencies),
        "peak_rss_mb": max(peak_rss_mb(), peak_rss_mb(resource.RUSAGE_CHILDREN)),
        "cpu_us_per_run": cpu / len(ids) * 1e6,
    }
    emit(result)


if __name__ == "__main__":
    main()
