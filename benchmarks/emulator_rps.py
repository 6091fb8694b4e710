"""Capacity of the emulator as a real server: requests per second and latency percentiles.

The emulator runs in its own process (the command), so the aiohttp client does not share its CPU
or GIL. Each request asks for a random one of the generated runs.

Usage:
    uv run python benchmarks/emulator_rps.py [--runs 10000] [--requests 20000] [--concurrency 64]
                                             [--http auto|h11|httptools] [--loop auto|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter

import aiohttp
from _common import API_KEY, cpu_seconds, start_emulator, stop_process

from parallel_tasks.emulator import generate_runs


async def drive(base_url: str, run_ids: list[str], args: argparse.Namespace) -> tuple[float, list[float], Counter[int]]:
    """Send ``args.requests`` GETs from ``args.concurrency`` workers; return elapsed, latencies, statuses."""
    rng = random.Random(args.seed)
    paths = [f"/v1/tasks/runs/{rng.choice(run_ids)}/input" for _ in range(args.requests + args.warmup)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector, headers={"x-api-key": API_KEY}) as session:

        async def worker(queue: list[str], record: bool) -> None:
            while queue:
                path = queue.pop()
                started = time.perf_counter()
                async with session.get(path) as response:
                    await response.read()
                if record:
                    latencies.append(time.perf_counter() - started)
                    statuses[response.status] += 1

        warmup = paths[: args.warmup]
        await asyncio.gather(*(worker(warmup, False) for _ in range(args.concurrency)))
        measured = paths[args.warmup :]
        started = time.perf_counter()
        await asyncio.gather(*(worker(measured, True) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    args = parser.parse_args()

    run_ids = list(generate_runs(args.runs, args.seed))  # the same ids the server generates
    process, base_url = start_emulator(args.runs, seed=args.seed, http=args.http, loop=args.loop)
    try:
        cpu_before = cpu_seconds(process.pid)
        elapsed, latencies, statuses = asyncio.run(drive(base_url, run_ids, args))
        cpu_after = cpu_seconds(process.pid)
    finally:
        stop_process(process)
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"emulator {base_url}  http={args.http} loop={args.loop}  runs={args.runs}  concurrency={args.concurrency}")
    print(f"requests {len(latencies)} in {elapsed:.2f} s: {len(latencies) / elapsed:,.0f} requests/s")
    p50, p95, p99 = (quantiles[q] * 1000 for q in (49, 94, 98))
    print(f"latency p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms")
    if cpu_before is not None and cpu_after is not None:
        # includes the warm-up requests; the server's own cost, whoever else shares the machine
        per_request = (cpu_after - cpu_before) / (len(latencies) + args.warmup)
        print(f"server CPU {per_request * 1e6:.0f} us/request: about {1 / per_request:,.0f} requests/s per core")
    print(f"statuses {dict(statuses)}")
    if set(statuses) != {200}:
        sys.exit("some requests did not answer 200")


if __name__ == "__main__":
    main()
