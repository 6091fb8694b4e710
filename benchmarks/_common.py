"""Helpers shared by the benchmark scripts: the emulator as a process, process clean-up, statistics."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

API_KEY = "bench-key"
SEED = 1
REPO = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_emulator(
    runs: int, *, seed: int = SEED, latency_ms: float = 0.0, http: str = "auto", loop: str = "auto", timeout: float = 60
) -> tuple[subprocess.Popen[str], str]:
    """Start the emulator command on a free port; return the process and the base URL it printed."""
    command = [
        sys.executable, "-m", "parallel_tasks.emulator", "--port", "0", "--runs", str(runs), "--seed", str(seed),
        "--api-key", API_KEY, "--latency-ms", str(latency_ms), "--http", http, "--loop", loop,
    ]  # fmt: skip
    return start_server(command, "the emulator", timeout)


def start_plain_server(
    runs: int, *, seed: int = SEED, latency_ms: float = 0.0, timeout: float = 60
) -> tuple[subprocess.Popen[str], str]:
    """Start ``plain_server.py`` (Starlette on uvicorn, not the emulator); return the process and its base URL."""
    command = [
        sys.executable, str(Path(__file__).resolve().parent / "plain_server.py"), "--runs", str(runs),
        "--seed", str(seed), "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    return start_server(command, "the plain server", timeout)


def start_server(command: list[str], name: str, timeout: float) -> tuple[subprocess.Popen[str], str]:
    """Start a server command that prints its base URL as its first stdout line once it is ready.

    The process leads its own session, so :func:`stop_process` can end it and anything it spawned.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        base_url = read_line(process, timeout)
    except BaseException:
        stop_process(process)
        raise
    if not base_url.startswith("http://"):
        stop_process(process)
        raise RuntimeError(f"{name} printed {base_url!r} instead of its base URL")
    return process, base_url


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of a process, waiting at most ``timeout`` seconds."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no output from {process.args!r} within {timeout:.0f} s")
    return process.stdout.readline().strip()


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Stop a process started with ``start_new_session=True``, and whatever it spawned in its session.

    SIGTERM to its process group (whose id is the process's PID), then SIGKILL to what lingers.
    """
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
    signal_group(process, signal.SIGKILL)


def signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    """Send a signal to the process group the process leads, if any member is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB (Linux reports ``ru_maxrss`` in KB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def process_cpu_s() -> float:
    """User + system CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_ids(run_ids: Sequence[str]) -> Path:
    """Write run ids to a temporary JSON file (for the worker processes) and return its path."""
    handle, name = tempfile.mkstemp(prefix="bench-ids-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(list(run_ids), file)
    return Path(name)


def read_ids(path: str | Path, n: int) -> list[str]:
    """The first ``n`` run ids of a file written by :func:`write_ids`."""
    ids: list[str] = json.loads(Path(path).read_text())
    if len(ids) < n:
        raise ValueError(f"{path} holds {len(ids)} run ids, {n} asked for")
    return ids[:n]


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the last stdout line, as JSON."""
    print(json.dumps(result), flush=True)
