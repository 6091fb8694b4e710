"""Where (c)'s CPU per request goes beyond (a)'s: the batch API with its layers taken away one at a time.

At 0 ms added latency the client's CPU per request sets the rate, so the gap between (c) our batch API and
(a) aiohttp gather is what each of our layers costs. In one process, against one emulator (its own
process), interleaved rounds of:

1. (a) aiohttp gather, reading and JSON-decoding each body (as ``clients.py``);
2. (c) our batch API as shipped;
3. then, each row on top of the one before: without the stall guard and aiohttp's per-request connect
   and read timers; without the check for numbers a float cannot hold; without parsing into
   ``TaskRunInput`` (``json.loads`` instead); with Python's cyclic garbage collector off.

Rows 3 on patch private functions of the library for the measurement only. They are not options, and they
are not a correct client: each row says what the client would gain by giving that layer up. Figures are
medians over the rounds; x (a) is within each round. Writes ``results/client_overhead.md``.

Usage:
    python benchmarks/client_overhead.py [--n 3000] [--concurrency 64] [--rounds 5] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any
from unittest import mock

import aiohttp
from _common import API_KEY, SEED, process_cpu_s, start_emulator, stop_process
from report import machine_info
from run import RESULTS, code_version, log

import parallel_tasks._aiohttp as exchange_module
import parallel_tasks._responses as responses_module
from parallel_tasks import AsyncParallelClient
from parallel_tasks.emulator import generate_runs


class _NoGuard:
    """Stands in for the exchange's stall guard: never fires, never moves."""

    async def __aenter__(self) -> _NoGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def when(self) -> None:
        return None

    def expired(self) -> bool:
        return False


def _parse_as_plain_json(run_id: str, status: int, headers: object, body: bytes, **_: object) -> Any:
    return json.loads(body)


# Each layer taken away, as what it patches; a row takes away its own and every one before it.
Layer = Callable[[ExitStack, AsyncParallelClient], None]


def _no_timers(stack: ExitStack, client: AsyncParallelClient) -> None:
    stack.enter_context(mock.patch.object(exchange_module, "_timeout", lambda seconds: _NoGuard()))
    no_timers = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)
    stack.enter_context(mock.patch.object(client._aiohttp, "_timeout", no_timers))


def _no_finite_check(stack: ExitStack, client: AsyncParallelClient) -> None:
    stack.enter_context(mock.patch.object(responses_module, "_may_hold_non_finite", lambda body: False))


def _no_model(stack: ExitStack, client: AsyncParallelClient) -> None:
    stack.enter_context(mock.patch.object(responses_module, "parse_run_input", _parse_as_plain_json))


def _no_gc(stack: ExitStack, client: AsyncParallelClient) -> None:
    gc.disable()
    stack.callback(gc.enable)


LAYERS: list[tuple[str, Layer]] = [
    ("without the stall guard and per-request timers", _no_timers),
    ("… and without the non-finite number check", _no_finite_check),
    ("… and without parsing into TaskRunInput (json.loads)", _no_model),
    ("… and with the cyclic garbage collector off", _no_gc),
]
BASELINE, OURS = "(a) aiohttp gather", "(c) our batch API, as shipped"


async def measure(base_url: str, ids: list[str], concurrency: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Every row once per round, in order; each row's CPU µs per request and runs/s, per round."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"x-api-key": API_KEY}
    figures: dict[str, list[dict[str, float]]] = {}
    async with (
        AsyncParallelClient(API_KEY, base_url=base_url, max_retries=0) as client,
        aiohttp.ClientSession(base_url, connector=connector, timeout=timeout, headers=headers) as session,
    ):

        async def one_plain(run_id: str) -> None:
            async with session.get(f"/v1/tasks/runs/{run_id}/input") as response:
                json.loads(await response.read())

        async def plain() -> None:
            semaphore = asyncio.Semaphore(concurrency)

            async def limited(run_id: str) -> None:
                async with semaphore:
                    await one_plain(run_id)

            await asyncio.gather(*(limited(run_id) for run_id in ids))

        async def ours() -> None:
            results = await client.get_task_run_inputs(ids, concurrency=concurrency)
            failed = [result.error for result in results if not result.ok]
            if failed:
                raise RuntimeError(f"{len(failed)} fetches failed, the first: {failed[0]}")

        async def timed(name: str, batch: Callable[[], Awaitable[None]]) -> None:
            gc.collect()  # each row starts from the same heap
            cpu, started = process_cpu_s(), time.perf_counter()
            await batch()
            elapsed = time.perf_counter() - started
            figures.setdefault(name, []).append(
                {"cpu_us": (process_cpu_s() - cpu) / len(ids) * 1e6, "rps": len(ids) / elapsed}
            )

        await plain()  # warm-up: connections, imports, model building
        await ours()
        for round_number in range(rounds):
            await timed(BASELINE, plain)
            await timed(OURS, ours)
            with ExitStack() as stack:
                for name, take_away in LAYERS:
                    take_away(stack, client)
                    await timed(name, ours)
            log(f"round {round_number + 1} of {rounds} done")
    return figures


def markdown(figures: dict[str, list[dict[str, float]]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    """The rows as a table: medians over the rounds, and each row's ratio to (a) within a round."""
    baseline = figures[BASELINE]
    lines = [
        "# Where (c)'s CPU per request goes: the batch API with its layers taken away",
        "",
        f"`python benchmarks/client_overhead.py --n {args.n} --concurrency {args.concurrency} "
        f"--rounds {args.rounds} --latency-ms {args.latency_ms:g}`: one process, one emulator in its own, "
        f"{args.rounds} interleaved rounds of N = {args.n:,} at c{args.concurrency}, {args.latency_ms:g} ms added "
        "latency. The rows below (c) as shipped take a layer away each, on top of the ones before, by patching "
        "private functions for the measurement only: they are not a correct client, they say what each layer "
        "costs. Medians over the rounds; x (a) is the median of each round's ratio.",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores; {machine['python']}",
        f"- **Date**: {machine['date']}; load average at start {machine['load_at_start']}",
        f"- **Code**: {code_version()}",
        "",
        "| client | CPU µs/request | x (a) | runs/s | x (a) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in figures.items():
        cpu_ratio = statistics.median(r["cpu_us"] / b["cpu_us"] for r, b in zip(rows, baseline, strict=True))
        rps_ratio = statistics.median(r["rps"] / b["rps"] for r, b in zip(rows, baseline, strict=True))
        cpu, rps = statistics.median(r["cpu_us"] for r in rows), statistics.median(r["rps"] for r in rows)
        lines.append(f"| {name} | {cpu:,.0f} | {cpu_ratio:.2f}x | {rps:,.0f} | {rps_ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    machine = machine_info()
    runs = generate_runs(args.n, SEED)
    emulator, base_url = start_emulator(args.n, latency_ms=args.latency_ms)
    try:
        figures = asyncio.run(measure(base_url, list(runs), args.concurrency, args.rounds))
    finally:
        stop_process(emulator)
    report = markdown(figures, args, machine)
    (RESULTS / "client_overhead.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
