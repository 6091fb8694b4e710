"""``verify`` over a large store on local disk: records per second and peak memory.

The store is generated directly (no API, no Prefect server): N runs, each with its content record and
``latest.json`` written exactly as an audit writes them (:func:`store_record`), and one audit manifest
over them all, which is the worst case for memory (the manifest index is the one thing verify holds).
Verification runs in a process of its own so its peak RSS is its own.

    python benchmarks/verify.py [--runs 100000] [--keep DIR]

Prints one JSON line: runs, records (content records + pointers), wall and CPU seconds, records per
wall and per CPU second (the machine may be shared: the load average says how much), peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO

TARGET_RECORDS_PER_S = 5_000
TARGET_PEAK_RSS_MB = 300


async def generate(folder: Path, runs: int) -> None:
    """N runs stored as an audit stores a first record of each (the same bytes as :func:`store_record`,
    written straight to disk to save time), then one manifest over them all."""
    from prefect.filesystems import LocalFileSystem

    from parallel_tasks.emulator import generate_runs
    from parallel_tasks.manifests import append_manifest
    from parallel_tasks.models import TaskRunInput
    from parallel_tasks.records import build_record, content_key, latest_key, seal
    from parallel_tasks.storage import _dump
    from parallel_tasks.validation import check_task_run_input

    pointers = []
    for run_id, body in generate_runs(runs, seed=7).items():
        run_input = TaskRunInput.model_validate(body)
        record = build_record(run_id, run_input, check_task_run_input(run_input), base_url="http://bench")
        content = seal(record)
        pointer = seal(record.model_copy(update={"input": None, "content_record_sha256": content.record_sha256}))
        (folder / latest_key(run_id)).parent.mkdir(parents=True)
        (folder / content_key(run_id, record.sha256 or "")).write_bytes(_dump(content))
        (folder / latest_key(run_id)).write_bytes(_dump(pointer))
        pointers.append(pointer)
    storage = LocalFileSystem(basepath=str(folder))
    await append_manifest(storage, pointers, chain="audit-run-inputs/bench", flow_run_id="bench")


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM on Linux (``ru_maxrss`` would count the parent's memory, which Linux
    carries over an exec), ``ru_maxrss`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verify_in_this_process(folder: Path) -> dict[str, Any]:
    from parallel_tasks.verify import LocalStore, verify_store

    started, cpu_started = time.perf_counter(), time.process_time()
    report = verify_store(LocalStore(folder))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    records = report.counts.get("content_records", 0) + report.counts.get("pointers", 0)
    return {
        "runs": report.counts.get("runs", 0),
        "records": records,
        "findings": len(report.findings),
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "runs_per_s": round(report.counts.get("runs", 0) / seconds),
        "cpu_seconds": round(cpu_seconds, 2),
        "records_per_cpu_s": round(records / cpu_seconds),
        "load_1m": os.getloadavg()[0],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this folder and keep it")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child: verify this folder
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(verify_in_this_process(args.measure)))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        if not (folder / "parallel-run-inputs").is_dir():
            started = time.perf_counter()
            asyncio.run(generate(folder, args.runs))
            print(f"generated {args.runs:,} runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, __file__, "--measure", str(folder)], capture_output=True, text=True, cwd=REPO, check=True
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["pass_rate"] = result["records_per_s"] >= TARGET_RECORDS_PER_S
        result["pass_memory"] = result["peak_rss_mb"] <= TARGET_PEAK_RSS_MB
        print(json.dumps(result))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
