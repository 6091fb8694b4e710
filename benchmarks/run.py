"""The whole benchmark in one run (``make bench``): clients side by side, the audit flow, Prefect's start-up.

1. Two emulators on 127.0.0.1, each in its own process, with 0 ms and 50 ms added latency, serving
   the same 10,000 generated runs; beside them two plain Starlette/uvicorn servers (``plain_server.py``,
   not the emulator's code) with the same runs and latencies.
2. For each latency, N in (100, 1,000, 10,000) and concurrency in (16, 64), each client in its own
   process (``clients.py``) on the emulator: (a) aiohttp, (b) raw httpx, the SDK's ``Parallel`` in a
   loop (on a fixed sample at most) and ``AsyncParallel`` gathered, (c) our batch API on its default
   transport and on httpx's own. Then (a) and (c) on the plain server at c64 for each latency and N
   (each row's ``server`` says which; ratios are within one server).
3. A Prefect server (temporary ``PREFECT_HOME``) and (d) the audit flow (``flow_worker.py``), the
   targeted configurations first, the rest while the time budget lasts; then the audit at the largest N
   with OpenLineage off and on (``openlineage_overhead.py``, written to ``results/openlineage.md``).
4. The one-off start-up cost of Prefect's ephemeral server, the server above stopped; then
   ``verify`` over 100,000 generated records (``verify.py``).
5. ``results/latest.json``, ``latest.md`` (table, machine, PASS/MISS targets) and ``latest.png``.

A measurement that fails or times out becomes an error cell; every process started here is
stopped by its PID in ``finally``.

Usage:
    python benchmarks/run.py [--budget-min 25] [--quick] [--targets-only] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openlineage_overhead
from _common import REPO, SEED, cpu_seconds, start_emulator, start_plain_server, stop_process, write_ids
from report import CLIENT_ORDER, machine_info, write_reports

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LATENCIES_MS = (0.0, 50.0)
SIZES = (100, 1_000, 10_000)
CONCURRENCIES = (16, 64)
PLAIN_CLIENTS, PLAIN_CONCURRENCY = ("aiohttp", "ours"), 64  # on the plain server: (a) and (c) only, to save time
SEQUENTIAL_SAMPLE = {0.0: 2_000, 50.0: 200}  # the SDK's sequential loop: first ids only, past this many
REPEATS, REPEAT_UP_TO = 3, 1_000  # batches this small are timed 3 times (median): the machine is noisy
Config = tuple[float, int, int]  # latency ms, N, concurrency
TARGETED_FLOWS = ((50.0, 1_000, 64), (50.0, 10_000, 64))
TARGETED_CLIENTS = ((50.0, 1_000, 64), (0.0, 1_000, 64))
CLIENT_TIMEOUT_S = 300
FLOW_TIMEOUT_S = 900
STARTUP_TIMEOUT_S = 240
VERIFY_TIMEOUT_S = 1_800  # generating 100,000 records, then verifying them


def log(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a child: no inherited Prefect profile or API URL, a temporary PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def run_worker(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a worker process; its last stdout line as JSON, or ``{"error": ...}`` if it failed."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=BENCH, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": tail[:200]}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable output: {lines[-1][:200]}"}
    return result


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, process: subprocess.Popen[Any], timeout: float) -> None:
    """Poll ``url`` until it answers 200; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy within {timeout:.0f} s")


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A Prefect server on a free port of 127.0.0.1 (its own process); yields its API URL."""
    with prefect_server_process(home) as (api_url, _):
        yield api_url


@contextmanager
def prefect_server_process(home: Path) -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """:func:`prefect_server`, yielding its process too (whose CPU time says what the server did)."""
    port = free_port()
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-ui", "--analytics-off"]
    with (home / "server.log").open("w") as server_log:
        process = subprocess.Popen(
            command, stdout=server_log, stderr=subprocess.STDOUT, env=clean_env(home), start_new_session=True
        )
        try:
            api_url = f"http://127.0.0.1:{port}/api"
            wait_healthy(f"{api_url}/health", process, timeout=180)
            yield api_url, process
        finally:
            stop_process(process)


def configurations(sizes: tuple[int, ...], only: set[Config] | None) -> list[Config]:
    """Every (latency, N, concurrency) of the run, or just ``only``'s."""
    every = [(lat, n, c) for lat in LATENCIES_MS for n in sizes for c in CONCURRENCIES]
    return [config for config in every if only is None or config in only]


def measure_clients(
    urls: dict[float, str], ids_file: Path, home: Path, sizes: tuple[int, ...], only: set[Config] | None = None
) -> list[dict[str, Any]]:
    """Every client at every (latency, N, concurrency) on the emulator, each in its own process."""
    rows: list[dict[str, Any]] = []
    for latency, n, concurrency in configurations(sizes, only):
        for client in CLIENT_ORDER:
            if client not in ("flow", "events"):
                rows.append(measure_client(client, "emulator", urls[latency], latency, n, concurrency, ids_file, home))
    return rows


def measure_plain(
    urls: dict[float, str], ids_file: Path, home: Path, sizes: tuple[int, ...], only: set[Config] | None = None
) -> list[dict[str, Any]]:
    """(a) and (c) on the plain Starlette server at c64, every latency and N: a server that is not ours."""
    rows: list[dict[str, Any]] = []
    for latency, n, concurrency in configurations(sizes, only):
        if concurrency != PLAIN_CONCURRENCY:
            continue
        for client in PLAIN_CLIENTS:
            rows.append(measure_client(client, "plain", urls[latency], latency, n, PLAIN_CONCURRENCY, ids_file, home))
    return rows


def measure_client(
    client: str, server: str, url: str, latency: float, n: int, concurrency: int, ids_file: Path, home: Path
) -> dict[str, Any]:
    """One client at one configuration, in its own process (``clients.py``); its row."""
    sequential = client == "sdk-sequential"
    sample = min(n, SEQUENTIAL_SAMPLE[latency]) if sequential else n
    repeats = 1 if sequential or n > REPEAT_UP_TO else REPEATS
    command = [sys.executable, "clients.py", client, "--base-url", url, "--ids-file", str(ids_file)]
    command += ["--n", str(n), "--concurrency", str(concurrency), "--sample", str(sample)]
    command += ["--repeats", str(repeats)]
    result = run_worker(command, clean_env(home), CLIENT_TIMEOUT_S)
    row = {"latency_ms": latency, "n": n, "concurrency": concurrency, "client": client, "server": server, **result}
    log(f"{server} {latency:.0f} ms N={n} c={concurrency} {client}: " + summary_of(result))
    return {**row, "load_1m": os.getloadavg()[0]}


def measure_flows(
    urls: dict[float, str],
    ids_file: Path,
    home: Path,
    sizes: tuple[int, ...],
    deadline: float,
    only: set[Config] | None = None,
) -> list[dict[str, Any]]:
    """(d) the audit flow on a running Prefect server: targeted configurations first, then others in time."""
    everything = configurations(sizes, only)
    targeted = [combo for combo in TARGETED_FLOWS if combo in everything]
    order = targeted + sorted((combo for combo in everything if combo not in targeted), key=lambda x: (x[1], -x[2]))
    rows: list[dict[str, Any]] = []
    rates: list[float] = []  # runs/s seen so far, to guess how long the next flow takes
    with prefect_server_process(home) as (api_url, server):
        log(f"Prefect server up at {api_url}")
        for latency, n, concurrency in order:
            row: dict[str, Any] = {"latency_ms": latency, "n": n, "concurrency": concurrency, "client": "flow"}
            row["server"] = "emulator"
            expected_s = 20 + n / min(rates, default=50)
            if (latency, n, concurrency) not in targeted and time.monotonic() + expected_s > deadline:
                rows.append({**row, "skipped": "time budget"})
                continue
            storage = home / f"storage-{latency:.0f}ms-{n}-c{concurrency}"
            env = clean_env(home, PREFECT_API_URL=api_url, PREFECT_LOCAL_STORAGE_PATH=str(storage))
            command = [sys.executable, "flow_worker.py", "--base-url", urls[latency], "--ids-file", str(ids_file)]
            command += ["--n", str(n), "--concurrency", str(concurrency), "--block", f"bench-{latency:.0f}ms"]
            result = run_worker_on_server(server, n, command, env)
            shutil.rmtree(storage, ignore_errors=True)
            rows.append({**row, **result, "load_1m": os.getloadavg()[0]})
            if "rps" in result:
                rates.append(result["rps"])
            log(f"{latency:.0f} ms N={n} c={concurrency} flow: " + summary_of(result))
        # The ceiling of the largest targeted audit: its events alone, on the same server, right after it.
        latency, n, concurrency = max(targeted, key=lambda combo: combo[1])
        env = clean_env(home, PREFECT_API_URL=api_url)
        command = [sys.executable, "events_worker.py", "--ids-file", str(ids_file), "--n", str(n)]
        result = run_worker_on_server(server, n, command, env)
        row = {"latency_ms": latency, "n": n, "concurrency": concurrency, "client": "events", "server": "emulator"}
        rows.append({**row, **result, "load_1m": os.getloadavg()[0]})
        log(f"N={n} the audit's events alone: " + summary_of(result))
    return rows


def run_worker_on_server(
    server: subprocess.Popen[Any], n: int, command: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """:func:`run_worker` for a worker of the Prefect server, with the server's CPU time over it per run (the
    server is one process: its threads are counted, and it spawns none)."""
    before = cpu_seconds(server.pid)
    result = run_worker(command, env, FLOW_TIMEOUT_S)
    after = cpu_seconds(server.pid)
    if before is not None and after is not None and "rps" in result:
        result["server_cpu_us_per_run"] = (after - before) / n * 1e6
    return result


def measure_startup(home: Path, repeats: int = 3) -> dict[str, Any]:
    """Wall time of a one-task-less flow on the ephemeral server, minus importing Prefect alone.

    ``first`` runs with a fresh PREFECT_HOME (the database is created and migrated); ``warm`` reuses it.
    """
    script = "from prefect import flow\n\n@flow\ndef one():\n    return 1\n\nassert one() == 1\n"
    baseline = "import prefect\nfrom prefect import flow\n"

    def timed(code: str, env_home: Path) -> float:
        env_home.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=clean_env(env_home, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=STARTUP_TIMEOUT_S)
        finally:
            stop_process(process)  # and the ephemeral server, should it outlive the flow
        if process.returncode != 0:
            raise RuntimeError((stderr.strip().splitlines() or ["failed"])[-1][:200])
        return time.perf_counter() - started

    try:
        import_s = statistics.median(timed(baseline, home / "baseline") for _ in range(repeats))
        first_s = timed(script, home / "ephemeral")
        warm_s = statistics.median(timed(script, home / "ephemeral") for _ in range(repeats - 1))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)[:200]}
    return {
        "import_s": import_s,
        "first_s": first_s,
        "warm_s": warm_s,
        "first_cost_s": first_s - import_s,
        "warm_cost_s": warm_s - import_s,
    }


def summary_of(result: dict[str, Any]) -> str:
    """One progress line's worth of a result."""
    if "error" in result:
        return f"ERROR {result['error']}"
    errors = f", {result['errors']} errors" if result.get("errors") else ""
    return f"{result['rps']:,.0f} runs/s over {result['runs']}, RSS {result['peak_rss_mb']:.0f} MB{errors}"


def code_version() -> str:
    """The commit measured, and whether the library had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "parallel_tasks"], capture_output=True, text=True, cwd=REPO, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in parallel_tasks/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=25, help="skip untargeted flow runs past this")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only (a smoke run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the reports from results/latest.json")
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the configurations the targets are about (clients at N = 1,000, c64; the audit at 1,000 and "
        "10,000), none of the side measurements: about 6 minutes",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if args.report_only:
        write_reports(json.loads((RESULTS / "latest.json").read_text()), RESULTS)
        return

    started = time.monotonic()
    deadline = started + args.budget_min * 60 - 90  # the start-up measurement and reports come last
    sizes = SIZES[:2] if args.quick else SIZES
    only = {*TARGETED_CLIENTS, *TARGETED_FLOWS} if args.targets_only else None
    data: dict[str, Any] = {"machine": machine_info(), "code": code_version(), "rows": [], "startup": {}}
    data["targets_only"] = args.targets_only
    from parallel_tasks.emulator import generate_runs

    ids_file = write_ids(list(generate_runs(max(sizes), SEED)))
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    servers: list[subprocess.Popen[str]] = []
    try:
        urls: dict[float, str] = {}
        plain_urls: dict[float, str] = {}  # the plain Starlette server, same runs and latencies
        for latency in LATENCIES_MS:
            process, urls[latency] = start_emulator(max(sizes), latency_ms=latency)
            servers.append(process)
            log(f"emulator {latency:.0f} ms at {urls[latency]} (pid {process.pid})")
            process, plain_urls[latency] = start_plain_server(max(sizes), latency_ms=latency)
            servers.append(process)
            log(f"plain server {latency:.0f} ms at {plain_urls[latency]} (pid {process.pid})")
        data["rows"] += measure_clients(urls, ids_file, home, sizes, only)
        data["rows"] += measure_plain(plain_urls, ids_file, home, sizes, only)
        try:
            data["rows"] += measure_flows(urls, ids_file, home, sizes, deadline, only)
            if not args.targets_only:
                with prefect_server(home) as api_url:  # the audit with OpenLineage on versus off, side by side
                    data["openlineage"] = openlineage_overhead.measure(
                        urls[0.0], ids_file, home, api_url, max(sizes), max(CONCURRENCIES), repeats=1
                    )
                openlineage_overhead.write(data["openlineage"])
        except (OSError, RuntimeError, TimeoutError) as exc:  # the server never came up: error cells
            log(f"Prefect server failed: {exc}")
            for latency, n, concurrency in TARGETED_FLOWS:
                data["rows"].append(
                    {"latency_ms": latency, "n": n, "concurrency": concurrency, "client": "flow", "error": str(exc)}
                )
    finally:
        for process in servers:
            stop_process(process)
        ids_file.unlink(missing_ok=True)
    try:
        if not args.targets_only:
            log("webhook receiver: benchmarks/webhooks.py (its own report, results/webhooks.md)")
            subprocess.run([sys.executable, "webhooks.py"], cwd=BENCH, timeout=FLOW_TIMEOUT_S * 2, check=False)
            log("ephemeral server start-up")
            data["startup"] = measure_startup(home)
            log("verify over 100,000 records on local disk")
            data["verify"] = run_worker([sys.executable, "verify.py"], clean_env(home), VERIFY_TIMEOUT_S)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    data["total_s"] = time.monotonic() - started
    write_reports(data, RESULTS)
    log(f"done in {data['total_s'] / 60:.1f} min: {RESULTS / 'latest.md'}, {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
