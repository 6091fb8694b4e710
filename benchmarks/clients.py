"""One client's measurement, in a process of its own: fetch N run inputs and print one JSON line.

The orchestrator (``benchmarks/run.py``) runs this once per client and configuration, so peak RSS
and CPU time belong to that client alone. Every client first makes one warm-up request (imports,
first connection, model building), then the clock runs over the batch, ``--repeats`` times on the
same client (the rate is over the median batch); latency is per request, over all batches.

Usage:
    python benchmarks/clients.py CLIENT --base-url URL --ids-file FILE --n N --concurrency C [--sample S]
                                      [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from _common import API_KEY, emit, peak_rss_mb, percentile, process_cpu_s, read_ids

TIMEOUT_S = 30.0  # every request's timeout, whichever the client
Outcome = tuple[float, bool]  # (seconds, answered 200 and parsed)


@dataclass
class Measurement:
    """The timed batches: wall time of each, this process's CPU time over all, each request's outcome."""

    elapsed_s: list[float]
    cpu_s: float
    outcomes: list[Outcome]


Batch = Callable[[list[str]], Awaitable[list[Outcome]]]


def path_of(run_id: str) -> str:
    """The endpoint's path for a run id."""
    return f"/v1/tasks/runs/{run_id}/input"


async def gather_limited(one: Callable[[str], Awaitable[Outcome]], ids: list[str], concurrency: int) -> list[Outcome]:
    """``asyncio.gather`` over every id, at most ``concurrency`` in flight (a semaphore)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def limited(run_id: str) -> Outcome:
        async with semaphore:
            return await one(run_id)

    return await asyncio.gather(*(limited(run_id) for run_id in ids))


async def timed(batch: Batch, ids: list[str], repeats: int) -> Measurement:
    """Warm up with one request, then time the batch ``repeats`` times on the same client."""
    await batch(ids[:1])
    elapsed: list[float] = []
    outcomes: list[Outcome] = []
    cpu = process_cpu_s()
    for _ in range(repeats):
        started = time.perf_counter()
        outcomes += await batch(ids)
        elapsed.append(time.perf_counter() - started)
    return Measurement(elapsed, process_cpu_s() - cpu, outcomes)


async def bench_aiohttp(base_url: str, ids: list[str], concurrency: int, repeats: int) -> Measurement:
    """(a) aiohttp ClientSession, reading and JSON-decoding each body: the ceiling."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    headers = {"x-api-key": API_KEY}
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout, headers=headers) as session:

        async def one(run_id: str) -> Outcome:
            started = time.perf_counter()
            async with session.get(path_of(run_id)) as response:
                body = await response.read()
                ok = response.status == 200 and isinstance(json.loads(body), dict)
            return time.perf_counter() - started, ok

        return await timed(lambda batch: gather_limited(one, batch, concurrency), ids, repeats)


async def bench_httpx(base_url: str, ids: list[str], concurrency: int, repeats: int) -> Measurement:
    """(b) httpx AsyncClient as it comes (default transport and limits), decoding each body."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, headers={"x-api-key": API_KEY}, timeout=TIMEOUT_S) as client:

        async def one(run_id: str) -> Outcome:
            started = time.perf_counter()
            response = await client.get(path_of(run_id))
            ok = response.status_code == 200 and isinstance(response.json(), dict)
            return time.perf_counter() - started, ok

        return await timed(lambda batch: gather_limited(one, batch, concurrency), ids, repeats)


async def bench_sdk_async(base_url: str, ids: list[str], concurrency: int, repeats: int) -> Measurement:
    """(b) the official SDK's ``AsyncParallel``, gathered at the concurrency."""
    from parallel import AsyncParallel

    async with AsyncParallel(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=TIMEOUT_S) as client:

        async def one(run_id: str) -> Outcome:
            started = time.perf_counter()
            try:
                await client.task_run.retrieve_input(run_id)
                ok = True
            except Exception:
                ok = False
            return time.perf_counter() - started, ok

        return await timed(lambda batch: gather_limited(one, batch, concurrency), ids, repeats)


async def bench_sdk_sequential(base_url: str, ids: list[str], repeats: int) -> Measurement:
    """(b) the official SDK's ``Parallel`` in a plain loop, one request at a time (no event loop involved)."""
    from parallel import Parallel

    with Parallel(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=TIMEOUT_S) as client:

        def one(run_id: str) -> Outcome:
            started = time.perf_counter()
            try:
                client.task_run.retrieve_input(run_id)
                ok = True
            except Exception:
                ok = False
            return time.perf_counter() - started, ok

        async def loop(batch: list[str]) -> list[Outcome]:
            return [one(run_id) for run_id in batch]  # blocking calls, in order

        return await timed(loop, ids, repeats)


async def bench_ours(base_url: str, ids: list[str], concurrency: int, repeats: int, *, httpx: bool) -> Measurement:
    """(c) our ``AsyncParallelClient`` batch API; its default transport, or httpx's own for reference."""
    import httpx as httpx_module

    from parallel_tasks import AsyncParallelClient

    transport = httpx_module.AsyncHTTPTransport() if httpx else None
    async with AsyncParallelClient(API_KEY, base_url=base_url, transport=transport, max_retries=0) as client:

        async def batch(batch_ids: list[str]) -> list[Outcome]:
            results = await client.get_task_run_inputs(batch_ids, concurrency=concurrency)
            return [(result.elapsed_ms / 1000, result.ok) for result in results]

        return await timed(batch, ids, repeats)


def measure(client: str, base_url: str, ids: list[str], concurrency: int, repeats: int) -> Measurement:
    """Run one client over the ids."""
    runners: dict[str, Callable[[], Awaitable[Measurement]]] = {
        "aiohttp": lambda: bench_aiohttp(base_url, ids, concurrency, repeats),
        "httpx": lambda: bench_httpx(base_url, ids, concurrency, repeats),
        "sdk-sequential": lambda: bench_sdk_sequential(base_url, ids, repeats),
        "sdk-async": lambda: bench_sdk_async(base_url, ids, concurrency, repeats),
        "ours": lambda: bench_ours(base_url, ids, concurrency, repeats, httpx=False),
        "ours-httpx": lambda: bench_ours(base_url, ids, concurrency, repeats, httpx=True),
    }

    async def main() -> Measurement:
        return await runners[client]()

    return asyncio.run(main())


CLIENTS = ("aiohttp", "httpx", "sdk-sequential", "sdk-async", "ours", "ours-httpx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--sample", type=int, default=0, help="measure only the first SAMPLE ids (0: all N)")
    parser.add_argument("--repeats", type=int, default=1, help="time the batch this many times; report the median")
    args = parser.parse_args()

    ids = read_ids(args.ids_file, args.n)
    if args.sample:
        ids = ids[: args.sample]
    measured = measure(args.client, args.base_url, ids, args.concurrency, args.repeats)
    latencies = [seconds for seconds, _ in measured.outcomes]
    result: dict[str, Any] = {
        "runs": len(ids),
        "repeats": args.repeats,
        "elapsed_s": measured.elapsed_s,
        "rps": len(ids) / statistics.median(measured.elapsed_s),
        "p50_ms": (percentile(latencies, 0.5) or 0) * 1000,
        "p95_ms": (percentile(latencies, 0.95) or 0) * 1000,
        "errors": sum(not ok for _, ok in measured.outcomes),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_us_per_run": measured.cpu_s / len(measured.outcomes) * 1e6,
    }
    emit(result)


if __name__ == "__main__":
    main()
