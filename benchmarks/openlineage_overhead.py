"""The audit flow with OpenLineage on versus off, side by side (target: on costs at most 10 % of runs/s).

One emulator (0 ms added latency: the audit is CPU-bound, so any cost of the events shows), one Prefect
server, and a lineage backend on 127.0.0.1 that answers 200 and counts what it gets. ``flow_worker.py`` runs
the audit over the same N run ids, alternately with ``OPENLINEAGE_DISABLED=true`` and with ``OPENLINEAGE_URL``
pointing at the backend (through the client's own HttpTransport), ``--repeats`` times each; the rate is the
median. ``make bench`` runs it at N = 10,000; alone:

    python benchmarks/openlineage_overhead.py --n 10000 [--concurrency 64] [--repeats 1]

Writes ``results/openlineage.json`` and ``results/openlineage.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import SEED, start_emulator, stop_process, write_ids

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.9  # on / off runs per second


@contextmanager
def lineage_backend() -> Iterator[tuple[str, dict[str, int]]]:
    """A lineage backend on a free port that answers 200; yields its URL and counts (events, inputs)."""
    counts = {"events": 0, "inputs": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with lock:
                counts["events"] += 1
                counts["inputs"] += len(event.get("inputs", []))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


def measure(
    base_url: str, ids_file: Path, home: Path, api_url: str, n: int, concurrency: int, repeats: int
) -> dict[str, Any]:
    """Alternate off and on runs of the audit against a running Prefect server; the medians and the ratio."""
    from run import clean_env, log, run_worker

    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with lineage_backend() as (lineage_url, counts):
        for repeat in range(repeats):
            for mode in ("off", "on"):
                storage = home / f"storage-openlineage-{mode}-{repeat}"
                lineage = {"OPENLINEAGE_URL": lineage_url} if mode == "on" else {"OPENLINEAGE_DISABLED": "true"}
                env = clean_env(home, PREFECT_API_URL=api_url, PREFECT_LOCAL_STORAGE_PATH=str(storage), **lineage)
                env = {k: v for k, v in env.items() if not (k.startswith("OPENLINEAGE") and k not in lineage)}
                env["PARALLEL_OPENLINEAGE_TIMEOUT"] = "60"  # a busy machine must not drop events mid-measurement
                before = dict(counts)
                command = [sys.executable, "flow_worker.py", "--base-url", base_url, "--ids-file", str(ids_file)]
                command += ["--n", str(n), "--concurrency", str(concurrency), "--block", "bench-openlineage"]
                result = run_worker(command, env, 1800)
                shutil.rmtree(storage, ignore_errors=True)
                result["lineage_events"] = counts["events"] - before["events"]
                result["lineage_inputs"] = counts["inputs"] - before["inputs"]
                runs[mode].append(result)
                log(f"OpenLineage {mode}, N={n} c={concurrency}: {result.get('rps', 0):,.1f} runs/s, {result}")
    rates = {mode: [r["rps"] for r in results if "rps" in r] for mode, results in runs.items()}
    medians = {mode: statistics.median(values) if values else None for mode, values in rates.items()}
    ratio = medians["on"] / medians["off"] if medians["on"] and medians["off"] else None
    return {"n": n, "concurrency": concurrency, "latency_ms": 0.0, "runs": runs, "rps": medians, "ratio": ratio}


def markdown(result: dict[str, Any]) -> str:
    """A short table: off and on, runs/s, CPU, RSS, events and inputs the backend received."""
    lines = [
        f"## The audit with OpenLineage on versus off (N = {result['n']:,}, c = {result['concurrency']}, 0 ms)",
        "",
        "| OpenLineage | runs/s (median) | CPU µs/run | peak RSS MB | events received | inputs received |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("off", "on"):
        last = result["runs"][mode][-1] if result["runs"][mode] else {}
        rps = result["rps"][mode]
        lines.append(
            f"| {mode} | {rps:,.1f} | {last.get('cpu_us_per_run', 0):,.0f} | {last.get('peak_rss_mb', 0):.0f} | "
            f"{last.get('lineage_events', 0):,} | {last.get('lineage_inputs', 0):,} |"
            if rps
            else f"| {mode} | error: {last.get('error', '?')} | | | | |"
        )
    ratio = result["ratio"]
    verdict = "—" if ratio is None else ("PASS" if ratio >= TARGET else "MISS")
    lines += ["", f"On / off: {ratio:.3f}x (target ≥ {TARGET}x): **{verdict}**" if ratio else "On / off: —", ""]
    return "\n".join(lines)


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openlineage.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "openlineage.md").write_text(markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from run import prefect_server

    from parallel_tasks.emulator import generate_runs

    ids_file = write_ids(list(generate_runs(args.n, SEED)))
    home = Path(tempfile.mkdtemp(prefix="bench-openlineage-"))
    emulator, base_url = start_emulator(args.n, latency_ms=0.0)
    try:
        with prefect_server(home) as api_url:
            result = measure(base_url, ids_file, home, api_url, args.n, args.concurrency, args.repeats)
    finally:
        stop_process(emulator)
        ids_file.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    write(result)
    print(markdown(result))


if __name__ == "__main__":
    main()
