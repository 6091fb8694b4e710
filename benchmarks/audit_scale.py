"""The audit flow at a larger N, time-boxed (``make bench-scale``; not part of ``make bench``).

One emulator (50 ms added latency, as many generated runs as the largest N) and one Prefect server
(temporary ``PREFECT_HOME``); then the audit flow (``flow_worker.py``) at c64 for each N in turn, the
smallest first, each in its own process with fresh local storage. While a worker runs, the RSS of its
process tree is sampled from outside (``/proc``, twice a second), so the report can say whether memory
stays flat or grows with the runs. The largest N gets a time box: past it, the worker is stopped and
its row says so (with the RSS samples taken until then).

Writes ``results/audit_scale.json`` and ``results/audit_scale.md``: runs/s, peak RSS and RSS over
time for each N, the runs/s of the largest N over the smallest's (target: within 20 %), and
peak RSS of the largest N over the smallest's (flat memory: at most 1.2x).

Usage:
    python benchmarks/audit_scale.py [--sizes 10000 100000] [--time-box-min 15] [--latency-ms 50] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import SEED, start_emulator, stop_process, write_ids
from report import machine_info
from run import BENCH, RESULTS, clean_env, code_version, log, prefect_server, summary_of

SAMPLE_EVERY_S = 0.5
SHOWN_AT = (0.1, 0.5, 1.0)  # RSS shown at these fractions of a worker's wall clock
RPS_WITHIN, RSS_AT_MOST = 0.8, 1.2  # the largest N's runs/s and peak RSS over the smallest's
SMALL_TIMEOUT_S = 900  # the sizes before the largest, which the time box does not cover


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants (Linux /proc), or None once it is gone."""
    total_kb, pending, found = 0, [pid], False
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = [
                int(child)
                for task in Path(f"/proc/{current}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except OSError:  # exited between two reads
            continue
        rss_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if rss_kb is not None:  # None: a zombie, exited and not yet reaped
            found = True
            total_kb += rss_kb
        pending += children
    return total_kb / 1024 if found else None


def sample_rss(process: subprocess.Popen[str], samples: list[tuple[float, float]]) -> None:
    """Append (wall clock, tree RSS in MB) to ``samples`` until the process exits."""
    while process.poll() is None:
        rss = tree_rss_mb(process.pid)
        if rss is not None:
            samples.append((time.time(), rss))
        time.sleep(SAMPLE_EVERY_S)


def run_sampled(command: list[str], env: dict[str, str], timeout: float, log_path: Path) -> dict[str, Any]:
    """Run a worker, sampling its RSS from outside; its last stdout line as JSON plus the samples.

    Its stderr (Prefect's logs, a line or more per run) goes to ``log_path``, not into this process's memory.
    """
    samples: list[tuple[float, float]] = []
    with log_path.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=BENCH, start_new_session=True
        )
        sampler = threading.Thread(target=sample_rss, args=(process, samples), daemon=True)
        sampler.start()
        try:
            stdout, _ = process.communicate(timeout=timeout)
            result = parse_result(process.returncode, stdout, log_path)
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {timeout:.0f} s (the time box)"}
        finally:
            stop_process(process)
            sampler.join(timeout=5)
    return {**result, "rss_samples": samples}


def parse_result(returncode: int, stdout: str, log_path: Path) -> dict[str, Any]:
    """A worker's last stdout line as JSON, or ``{"error": ...}`` with the last line of its log."""
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        return {"error": (log_path.read_text().strip().splitlines() or [f"exit status {returncode}"])[-1][:200]}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable output: {lines[-1][:200]}"}
    return result


def rss_at(row: dict[str, Any], fraction: float) -> float | None:
    """The RSS sampled nearest to a fraction of the flow call (of the whole worker if it did not finish), or None."""
    samples: list[tuple[float, float]] = row.get("rss_samples", [])
    if not samples:
        return None
    if "started_at" in row:
        start, end = row["started_at"], row["started_at"] + row["elapsed_s"]
    else:
        start, end = samples[0][0], samples[-1][0]
    moment = start + (end - start) * fraction
    return min(samples, key=lambda sample: abs(sample[0] - moment))[1]


def measure(
    sizes: list[int], latency_ms: float, concurrency: int, time_box_s: float, home: Path
) -> list[dict[str, Any]]:
    """The audit flow at each N on one emulator and one Prefect server; one row per N."""
    from parallel_tasks.emulator import generate_runs

    largest = max(sizes)
    ids_file = write_ids(list(generate_runs(largest, SEED)))
    emulator, base_url = start_emulator(largest, latency_ms=latency_ms, timeout=600)
    rows: list[dict[str, Any]] = []
    try:
        log(f"emulator {latency_ms:.0f} ms, {largest:,} runs, at {base_url} (pid {emulator.pid})")
        with prefect_server(home) as api_url:
            log(f"Prefect server up at {api_url}")
            for n in sorted(sizes):
                storage = home / f"storage-{n}"
                env = clean_env(home, PREFECT_API_URL=api_url, PREFECT_LOCAL_STORAGE_PATH=str(storage))
                command = [sys.executable, "flow_worker.py", "--base-url", base_url, "--ids-file", str(ids_file)]
                command += ["--n", str(n), "--concurrency", str(concurrency), "--block", f"scale-{n}"]
                timeout = time_box_s if n == largest else SMALL_TIMEOUT_S
                result = run_sampled(command, env, timeout, home / f"worker-{n}.log")
                shutil.rmtree(storage, ignore_errors=True)
                row = {"latency_ms": latency_ms, "n": n, "concurrency": concurrency, **result}
                rows.append({**row, "load_1m": os.getloadavg()[0]})
                log(f"N={n:,}: " + summary_of(result) + f"; sampled tree RSS peak {sampled_peak(result):.0f} MB")
    finally:
        stop_process(emulator)
        ids_file.unlink(missing_ok=True)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The two targets: runs/s of the largest N within 20 % of the smallest's, and flat peak RSS."""
    small, large = rows[0], rows[-1]  # rows are in N order
    if "rps" not in small or "rps" not in large:
        return ["- **NOT MEASURED**: the smallest or the largest N has no figure (see the table)"]
    rps_ratio = large["rps"] / small["rps"]
    rss_ratio = sampled_peak(large) / sampled_peak(small)
    return [
        f"- **{'PASS' if rps_ratio >= RPS_WITHIN else 'MISS'}** runs/s at N={large['n']:,} over N={small['n']:,}: "
        f"{rps_ratio:.2f}x (target ≥ {RPS_WITHIN}x, within 20 %)",
        f"- **{'PASS' if rss_ratio <= RSS_AT_MOST else 'MISS'}** peak RSS at N={large['n']:,} over N={small['n']:,}: "
        f"{rss_ratio:.2f}x (flat memory: target ≤ {RSS_AT_MOST}x)",
    ]


def sampled_peak(row: dict[str, Any]) -> float:
    """The largest sampled tree RSS of a row, or the worker's own peak without samples."""
    return float(max((rss for _, rss in row.get("rss_samples", [])), default=row.get("peak_rss_mb", 0.0)))


def markdown(data: dict[str, Any]) -> str:
    """The whole ``audit_scale.md``."""
    machine, rows = data["machine"], data["rows"]
    shown = " / ".join(f"{fraction:.0%}" for fraction in SHOWN_AT)
    lines = [
        "# The audit flow at scale",
        "",
        "`make bench-scale` (`benchmarks/audit_scale.py`): the audit flow (`flow_worker.py`) on one emulator "
        f"({data['latency_ms']:.0f} ms added latency) and one running Prefect server, c{data['concurrency']}, "
        f"each N in its own process; the largest N time-boxed at {data['time_box_min']:g} min.",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM; {machine['python']}",
        f"- **Date**: {machine['date']}; load average at start {machine['load_at_start']} (a shared, noisy machine)",
        f"- **Code**: {data.get('code', 'unknown')}",
        "",
        "## Targets",
        "",
        *verdicts(rows),
        "",
        "## Results",
        "",
        f"| N | runs/s | errors | peak RSS MB (worker) | peak RSS MB (sampled tree) | RSS MB at {shown} of the flow "
        "call | samples | load | notes |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        over_time = " / ".join("—" if (rss := rss_at(row, f)) is None else f"{rss:.0f}" for f in SHOWN_AT)
        if "rps" in row:
            figures, note = f"{row['rps']:,.0f} | {row['errors']:,} | {row['peak_rss_mb']:.0f}", ""
        else:
            figures, note = "— | — | —", f"error: {row.get('error', '?')}".replace("|", "/")
        lines.append(
            f"| {row['n']:,} | {figures} | {sampled_peak(row):.0f} | {over_time} | {len(row.get('rss_samples', []))} "
            f"| {row['load_1m']:.1f} | {note} |"
        )
    lines += [
        "",
        "runs/s is N over the flow call's wall clock (as in `make bench`'s (d) rows). Peak RSS (worker) is the "
        "worker's `ru_maxrss`; the sampled tree RSS is read from `/proc` every "
        f"{SAMPLE_EVERY_S:g} s for the worker and its descendants, from its start (Prefect imports included) to its "
        "exit. RSS at 10 / 50 / 100 % is the sample nearest that point of the flow call's wall clock (of the whole "
        "worker when it was stopped); the fetches progress about evenly over the call, so 50 % against 100 % shows "
        "whether memory grows with the runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="N values, smallest first")
    parser.add_argument("--time-box-min", type=float, default=15, help="stop the largest N's worker past this")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if len(set(args.sizes)) < 2 or min(args.sizes) < 1:
        parser.error("--sizes needs at least two different positive N values")

    data: dict[str, Any] = {
        "machine": machine_info(),
        "code": code_version(),
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "time_box_min": args.time_box_min,
    }
    home = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        data["rows"] = measure(sorted(set(args.sizes)), args.latency_ms, args.concurrency, args.time_box_min * 60, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit_scale.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / "audit_scale.md").write_text(markdown(data))
    print("\n".join(verdicts(data["rows"])).replace("**", ""))
    log(f"written: {RESULTS / 'audit_scale.md'}")


if __name__ == "__main__":
    main()
