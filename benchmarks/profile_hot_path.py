"""Where the time goes: pyinstrument over (c) our batch API, or (d) the audit flow, against the emulator.

``client`` profiles ``AsyncParallelClient.get_task_run_inputs`` in this process (the emulator runs
in its own). ``flow`` starts a Prefect server (temporary ``PREFECT_HOME``) and profiles the audit
flow: the flow's own thread, and each batch task in the worker thread it runs in (pyinstrument
samples one thread per profiler, so the batch task is wrapped here; the library is unchanged).
Prints the functions with the most self time, then the call tree.

Usage:
    python benchmarks/profile_hot_path.py client [--latency-ms 50] [--n 1000] [--concurrency 64]
    python benchmarks/profile_hot_path.py flow [--latency-ms 50] [--n 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import API_KEY, REPO, SEED, start_emulator, stop_process
from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from parallel_tasks.emulator import generate_runs

INTERVAL_S = 0.0005


def owner(file_path: str | None, function: str) -> str:
    """Who a frame's code belongs to: ours, a site-packages distribution, a stdlib module, or a built-in."""
    path = (file_path or "").replace("\\", "/")
    if not path or path.startswith("<"):
        return f"<built-in> {function}"
    if "/parallel_tasks/" in path or "/flows/" in path:
        return "parallel_tasks (ours)"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/benchmarks/" in path:
        return "benchmark harness"
    parts = path.split("/")
    for index, part in enumerate(parts[:-1]):
        if part.startswith("python3"):
            return "stdlib " + parts[index + 1].removesuffix(".py")
    return path


def self_time_by_owner(session: Session) -> dict[str, float]:
    """Self time summed per owner (see :func:`owner`) over the whole frame tree."""
    totals: dict[str, float] = {}
    root = session.root_frame()
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:  # the "[self]" leaves: their time is already in the parent's total_self_time
            continue
        name = owner(frame.file_path, frame.function)
        totals[name] = totals.get(name, 0.0) + frame.total_self_time
    return totals


def show(title: str, session: Session, top: int) -> None:
    """Print self time per package, the top functions by self time, then the call tree (under 2% folded)."""
    totals = self_time_by_owner(session)
    whole = sum(totals.values()) or 1.0
    print(f"\n=== {title}: self time by package ({whole:.1f} s sampled, {session.cpu_time:.1f} s CPU) ===")
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1])[:top]:
        print(f"{100 * seconds / whole:5.1f}%  {seconds:7.2f} s  {name}")
    flat = ConsoleRenderer(flat=True, show_all=False, time="percent_of_total").render(session)
    print(f"\n=== {title}: top {top} functions by self time ===")
    print("\n".join(flat.splitlines()[: top + 8]))
    tree = ConsoleRenderer(show_all=False, processor_options={"filter_threshold": 0.02}).render(session)
    print(f"\n=== {title}: call tree ===")
    print(tree)


def profile_client(base_url: str, ids: list[str], concurrency: int, top: int) -> None:
    """Profile our batch API over the ids (after a warm-up request)."""
    from parallel_tasks import AsyncParallelClient

    async def main() -> float:
        async with AsyncParallelClient(API_KEY, base_url=base_url, max_retries=0) as client:
            await client.get_task_run_inputs(ids[:1])
            profiler.start()
            started = time.perf_counter()
            results = await client.get_task_run_inputs(ids, concurrency=concurrency)
            elapsed = time.perf_counter() - started
            profiler.stop()
            if not all(result.ok for result in results):
                raise RuntimeError("some fetches failed")
            return elapsed

    profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
    elapsed = asyncio.run(main())
    print(f"{len(ids)} runs in {elapsed:.2f} s: {len(ids) / elapsed:,.0f} runs/s (profiled, so slower)")
    assert profiler.last_session is not None
    show("our batch API", profiler.last_session, top)


def profile_flow(base_url: str, ids: list[str], concurrency: int, top: int) -> None:
    """Profile the audit flow on a fresh Prefect server: the flow's thread and every batch task's."""
    from run import prefect_server

    home = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    with prefect_server(home) as api_url:
        os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home))
        os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "storage")
        sys.path.insert(0, str(REPO))
        from parallel_tasks import ParallelCredentials
        from parallel_tasks.flows import audit_run_inputs
        from parallel_tasks.tasks import audit_run_inputs_batch

        ParallelCredentials(api_key=API_KEY, base_url=base_url).save("bench-profile", overwrite=True)
        sessions: list[Session] = []
        lock = threading.Lock()
        original = audit_run_inputs_batch.fn

        @functools.wraps(original)
        async def profiled(*args: Any, **kwargs: Any) -> Any:
            batch_profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
            batch_profiler.start()
            try:
                return await original(*args, **kwargs)
            finally:
                session = batch_profiler.stop()
                with lock:
                    sessions.append(session)

        audit_run_inputs_batch.fn = profiled
        main_profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
        main_profiler.start()
        started = time.perf_counter()
        state = audit_run_inputs(
            run_ids=ids, credentials_block="bench-profile", max_concurrency=concurrency, return_state=True
        )
        elapsed = time.perf_counter() - started
        main_session = main_profiler.stop()
        rate = len(ids) / elapsed
        print(f"flow {state.type.value}: {len(ids)} runs in {elapsed:.2f} s: {rate:,.0f} runs/s (profiled)")
        show("audit flow, main thread", main_session, top)
        if sessions:
            combined = functools.reduce(Session.combine, sessions)
            show(f"audit flow, {len(sessions)} batch tasks (their threads, combined)", combined, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["client", "flow"])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    ids = list(generate_runs(args.n, SEED))
    process, base_url = start_emulator(args.n, latency_ms=args.latency_ms)
    try:
        if args.target == "client":
            profile_client(base_url, ids, args.concurrency, args.top)
        else:
            profile_flow(base_url, ids, args.concurrency, args.top)
    finally:
        stop_process(process)


if __name__ == "__main__":
    main()
