"""Benchmark of the webhook receiver: verified deliveries per second, and webhook -> record latency.

1. Throughput. The receiver (``create_webhook_app``: size cap, signature check, duplicate window, event built,
   handed to an in-memory sink) and a bare Starlette endpoint that only reads the body and answers 204, each
   under uvicorn in its own process, take the same signed deliveries from one aiohttp client (``--n`` of them,
   ``--concurrency`` at a time), alternately, ``--rounds`` times; the median of each is compared (and the
   receiver's own CPU per delivery, in-process). Targets: the
   receiver at least 0.5x the bare endpoint, and at least 1,000 verified deliveries per second.
2. Latency. A Prefect server, ``python -m parallel_tasks setup`` (the ``on-completion`` trigger), the receiver
   command, a process worker and the emulator sending deliveries: for ``--latency-runs`` runs completed one every
   ``--interval-s``, the time from the accepted delivery to the stored record, split into its stages.

    python benchmarks/webhooks.py                  # both; writes benchmarks/results/webhooks.md
    python benchmarks/webhooks.py --skip-latency   # throughput only (no Prefect server)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import REPO, cpu_seconds, percentile, read_line, stop_process

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "whsec_bench-secret-not-real"
PATH = "/webhooks/parallel"
RUN = "trun_0123456789abcdef0123456789abcdef"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the servers, each in its own process -----------------------------------------------------------------------


def serve(kind: str) -> None:
    """``--serve receiver|bare``: the app under uvicorn on a free port; prints its URL first."""
    import socket

    import uvicorn
    from pydantic import SecretStr
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from parallel_tasks.webhooks import create_webhook_app

    events = 0

    async def count(event: Any) -> None:
        nonlocal events
        events += 1

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    if kind == "receiver":
        app = create_webhook_app([SecretStr(SECRET)], sink=count)
    else:
        app = Starlette(routes=[Route(PATH, bare, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def deliveries(n: int) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct deliveries signed now (so all are within the tolerance while the benchmark runs)."""
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(SECRET.encode())
    now = datetime.now(timezone.utc)
    made = []
    for number in range(n):
        body = json.dumps(
            {
                "timestamp": now.isoformat(),
                "type": "task_run.status",
                "data": {
                    "run_id": f"trun_{number:032x}",
                    "status": "completed",
                    "is_active": False,
                    "processor": "core",
                    "metadata": {"team": "data", "job": f"nightly-{number}"},
                    "created_at": now.isoformat(),
                    "modified_at": now.isoformat(),
                    "error": None,
                    "warnings": None,
                },
            }
        )
        webhook_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(webhook_id, now, body),
        }
        made.append((body.encode(), headers))
    return made


async def post_all(url: str, batch: list[tuple[bytes, dict[str, str]]], concurrency: int) -> dict[str, Any]:
    """POST every delivery, ``concurrency`` at a time; the rate and the statuses seen."""
    import aiohttp

    statuses: dict[int, int] = {}
    queue = iter(batch)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def worker() -> None:
            for body, headers in queue:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"rps": len(batch) / elapsed, "statuses": statuses}


def measure_throughput(n: int, concurrency: int, rounds: int) -> dict[str, Any]:
    servers = {}
    try:
        for kind in ("bare", "receiver"):
            command = [sys.executable, __file__, "--serve", kind]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO)
            servers[kind] = (process, read_line(process, 60))
        asyncio.run(post_all(servers["receiver"][1], deliveries(200), concurrency))  # warm both up
        asyncio.run(post_all(servers["bare"][1], deliveries(200), concurrency))
        rates: dict[str, list[float]] = {"bare": [], "receiver": []}
        cpu_us: dict[str, list[float]] = {"bare": [], "receiver": []}
        for number in range(rounds):
            for kind in ("bare", "receiver"):
                batch = deliveries(n)
                cpu_before = cpu_seconds(servers[kind][0].pid) or 0.0
                result = asyncio.run(post_all(servers[kind][1], batch, concurrency))
                cpu_us[kind].append(((cpu_seconds(servers[kind][0].pid) or 0.0) - cpu_before) / n * 1e6)
                expected = {204: n}
                if result["statuses"] != expected:
                    raise RuntimeError(f"{kind} answered {result['statuses']}, expected {expected}")
                rates[kind].append(result["rps"])
                log(f"round {number + 1}: {kind} {result['rps']:,.0f}/s, {cpu_us[kind][-1]:.0f} µs server CPU each")
    finally:
        for process, _ in servers.values():
            stop_process(process)
    bare, receiver = statistics.median(rates["bare"]), statistics.median(rates["receiver"])
    return {
        **cpu_per_delivery(n),
        "n": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "bare_rps": bare,
        "receiver_rps": receiver,
        "ratio": receiver / bare,
        "all_rps": rates,
        "bare_cpu_us": statistics.median(cpu_us["bare"]),
        "receiver_cpu_us": statistics.median(cpu_us["receiver"]),
    }


def cpu_per_delivery(n: int) -> dict[str, float]:
    """In-process CPU microseconds per delivery of the receiver's own work: the signature check alone, and the
    check plus building the event (what the receiver adds to a bare endpoint)."""
    from pydantic import SecretStr

    from parallel_tasks.webhooks import WebhookVerifier, build_event

    verifier = WebhookVerifier([SecretStr(SECRET)])
    batch = deliveries(n)
    started = time.process_time()
    for body, headers in batch:
        verifier.verify(headers, body)
    verified = time.process_time()
    for body, headers in batch:
        build_event(verifier.verify(headers, body))
    done = time.process_time()
    return {"verify_us": (verified - started) / n * 1e6, "verify_and_event_us": (done - verified) / n * 1e6}


# -- latency through server, trigger and worker -----------------------------------------------------------------


def measure_latency(runs: int, interval_s: float) -> dict[str, Any]:
    from run import clean_env, prefect_server

    from parallel_tasks.emulator import Emulator, WebhookSender, generate_runs, run_emulator_server
    from parallel_tasks.records import latest_key

    home = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    storage = home / "results"
    key = "bench-key"
    emulator = Emulator(generate_runs(runs, seed=16), api_keys=[key])
    processes: list[subprocess.Popen[Any]] = []
    with prefect_server(home) as api_url, run_emulator_server(emulator) as emulator_url:
        env = clean_env(home, PREFECT_API_URL=api_url, PREFECT_LOCAL_STORAGE_PATH=str(storage))
        setup = [sys.executable, "-m", "parallel_tasks", "setup", "--emulator", emulator_url]
        subprocess.run(setup, env={**env, "PARALLEL_API_KEY": key}, cwd=REPO, check=True, capture_output=True)
        log("deployments ready")
        try:
            receiver_cmd = [sys.executable, "-m", "parallel_tasks", "webhooks", "serve", "--port", "0"]
            receiver = subprocess.Popen(
                receiver_cmd,
                env={**env, "PARALLEL_WEBHOOK_SECRET": SECRET},
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            processes.append(receiver)
            url = read_line(receiver, 90)
            worker_cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "parallel-process"]
            with (home / "worker.log").open("w") as worker_log:
                processes.append(
                    subprocess.Popen(
                        [*worker_cmd, "--limit", "4"],
                        env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
                        cwd=REPO,
                        stdout=worker_log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            time.sleep(3)  # let the worker register before the first delivery (not part of any latency)
            emulator.webhooks = sender = WebhookSender(emulator.store, secret=SECRET, url=url)
            run_ids = list(emulator.store.ids())
            for run_id in run_ids:
                sender.complete(run_id)
                time.sleep(interval_s)
            sender.wait_idle(60)
            delivered = {a.run_id: a.time for a in sender.log if a.kind == "genuine" and a.status == 204}
            sender.close()
            deadline = time.monotonic() + 900
            while not all((storage / latest_key(r)).exists() for r in run_ids):
                if time.monotonic() > deadline:
                    raise TimeoutError("not every run was recorded within 15 minutes")
                time.sleep(0.5)
            recorded = {r: (storage / latest_key(r)).stat().st_mtime for r in run_ids}
            stages = flow_run_stages(api_url, delivered)
        finally:
            for process in processes:
                stop_process(process)
    totals = [recorded[r] - delivered[r] for r in run_ids]
    result: dict[str, Any] = {"runs": runs, "interval_s": interval_s, "total_s": summary(totals)}
    for stage, values in stages.items():
        result[stage] = summary(values)
    return result


def flow_run_stages(api_url: str, delivered: dict[str, float]) -> dict[str, list[float]]:
    """Per flow run of ``on-completion``: delivery -> created (trigger), created -> started (worker), run time."""
    from prefect.client.orchestration import SyncPrefectClient

    stages: dict[str, list[float]] = {"to_flow_run_s": [], "to_start_s": [], "run_s": []}
    with SyncPrefectClient(api_url) as client:
        deployment = client.read_deployment_by_name("fetch-run-input/on-completion")
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        for flow_run in client.read_flow_runs(deployment_filter=only):
            sent = delivered.get(flow_run.parameters.get("run_id", ""))
            if sent is None or flow_run.created is None or flow_run.start_time is None or flow_run.end_time is None:
                continue
            stages["to_flow_run_s"].append(flow_run.created.timestamp() - sent)
            stages["to_start_s"].append((flow_run.start_time - flow_run.created).total_seconds())
            stages["run_s"].append((flow_run.end_time - flow_run.start_time).total_seconds())
    return stages


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}


# -- report -----------------------------------------------------------------------------------------------------


def report(data: dict[str, Any]) -> str:
    import os

    t = data["throughput"]
    ratio_ok = "PASS" if t["ratio"] >= 0.5 else "MISS"
    rate_ok = "PASS" if t["receiver_rps"] >= 1000 else "MISS"
    cap = t["bare_cpu_us"] / t["receiver_cpu_us"]
    cap_ok = "PASS" if cap >= 0.5 else "MISS"
    lines = [
        "# Webhook receiver",
        "",
        f"`python benchmarks/webhooks.py`, {data['when']}; load average at start {data['load']}.",
        "",
        "## Verified deliveries per second",
        "",
        f"{t['n']:,} signed deliveries per round, {t['concurrency']} at a time from one aiohttp client, "
        f"{t['rounds']} rounds alternating, medians; each server is uvicorn in its own process.",
        "",
        "| server | deliveries/s | x bare | server CPU µs per delivery | capacity x bare (CPU) |",
        "|---|---:|---:|---:|---:|",
        f"| bare Starlette endpoint (reads the body, answers 204) | {t['bare_rps']:,.0f} | 1.00x "
        f"| {t['bare_cpu_us']:.0f} | 1.00x |",
        f"| receiver (cap, verify, dedupe, event built; in-memory sink) | {t['receiver_rps']:,.0f} "
        f"| {t['ratio']:.2f}x | {t['receiver_cpu_us']:.0f} | {t['bare_cpu_us'] / t['receiver_cpu_us']:.2f}x |",
        "",
        f"- **{ratio_ok}** receiver vs bare endpoint: {t['ratio']:.2f}x (target >= 0.5x)",
        f"- **{cap_ok}** receiver vs bare endpoint by server CPU per delivery: {cap:.2f}x (target >= 0.5x)",
        f"- **{rate_ok}** receiver: {t['receiver_rps']:,.0f} verified deliveries/s (target >= 1,000/s)",
        "",
        f"In-process, the receiver's own work is {t['verify_us']:.0f} µs of CPU per delivery for the signature "
        f"check and {t['verify_and_event_us']:.0f} µs with the Prefect event built; in the server process a "
        f"delivery costs {t['receiver_cpu_us']:.0f} µs against {t['bare_cpu_us']:.0f} µs for the bare endpoint "
        "(the rest is the request handling around that work, not broken down here). That is about "
        f"{1e6 / t['receiver_cpu_us']:,.0f} verified deliveries per second per core, where Parallel creates at most "
        "2,000 runs a minute (33 a second). The load generator shares the same two cores (with whatever else "
        "runs), so deliveries/s move with the load, and the bare endpoint is partly held back by the client: its "
        "server CPU shows how much faster it could go. Rounds (deliveries/s): "
        + ", ".join(f"{k} {', '.join(f'{r:,.0f}' for r in v)}" for k, v in t["all_rps"].items())
        + ".",
    ]
    latency = data.get("latency")
    if latency:
        lines += [
            "",
            "## Webhook -> record latency",
            "",
            f"{latency['runs']} runs completed one every {latency['interval_s']:g} s by the emulator; a Prefect "
            "server (SQLite), the receiver command, the `on-completion` trigger and one process worker "
            "(`--limit 4`, polling every second).",
            "",
            "| stage | p50 s | p95 s |",
            "|---|---:|---:|",
        ]
        names = {
            "to_flow_run_s": "delivery accepted -> flow run created (event, trigger, automation)",
            "to_start_s": "flow run created -> started (worker poll, process start)",
            "run_s": "flow run start -> end (import, fetch, validate, record)",
            "total_s": "**delivery accepted -> record stored**",
        }
        for stage, name in names.items():
            value = latency[stage]
            p50, p95 = (f"{value[q]:.2f}" if value[q] is not None else "-" for q in ("p50", "p95"))
            lines.append(f"| {name} | {p50} | {p95} |")
        lines += [
            "",
            "The receiver's own part is well under a millisecond. What bounds the latency is Prefect: the "
            "triggers service evaluating the event and creating the flow run (usually tens of milliseconds, seconds "
            "when the server is busy), then the worker: its poll interval (1 s here, 10 s by default) and a new "
            "Python process per flow run that imports Prefect, which on a loaded machine takes seconds. Runs that "
            "finish faster than the worker starts processes queue up behind its `--limit` and the deployment's "
            "concurrency limit (4).",
        ]
    lines += ["", f"cores: {os.cpu_count()}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["receiver", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--interval-s", type=float, default=3.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite webhooks.md from webhooks.json")
    args = parser.parse_args()
    if args.report_only:
        (RESULTS / "webhooks.md").write_text(report(json.loads((RESULTS / "webhooks.json").read_text())))
        return
    if args.serve:
        serve(args.serve)
        return
    import os

    data: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    data["throughput"] = measure_throughput(args.n, args.concurrency, args.rounds)
    if not args.skip_latency:
        data["latency"] = measure_latency(args.latency_runs, args.interval_s)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhooks.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "webhooks.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
