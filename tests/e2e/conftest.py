"""The real parts for the end-to-end tests: a ``prefect server start`` subprocess with its own home (SQLite),
the emulator as an HTTP server, and helpers that run Prefect commands and workers against them.

Every process is started in its own session and stopped by its process group id (SIGTERM, then SIGKILL),
from ``finally`` blocks, so a failing test leaves nothing running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from parallel_tasks.emulator import Emulator, demo_runs, run_emulator_server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
# A distinctive key: the set-up output and the deployments must never contain it.
E2E_KEY = "pk-e2e-3b9f1c7d2e8a4f60"
BLOCK = "parallel"
POOL = "parallel-process"
SetupRuns = tuple[subprocess.CompletedProcess[str], ...]


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Stop a process and everything it started: SIGTERM to its process group, SIGKILL to whatever of the
    group is left after ``timeout`` (or once the leader has exited)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def started(command: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own session with output to ``log``; stop it on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process)


@dataclass
class Stack:
    """The running server (and where its subprocesses keep their state)."""

    api_url: str
    env: dict[str, str]
    home: Path

    @property
    def results(self) -> Path:
        return Path(self.env["PREFECT_LOCAL_STORAGE_PATH"])

    def run(self, *argv: str, timeout: float = 180, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run a command against the server, failing the test if it fails."""
        env = {**self.env, **extra_env}
        pipe = subprocess.PIPE
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=pipe, stderr=pipe, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            stop(process)  # on a timeout, or whatever it left running
        done = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def deployment_run(self, name: str, *params: str) -> str:
        """``prefect deployment run NAME --param ...``; the new flow run's id."""
        args = [arg for param in params for arg in ("--param", param)]
        output = self.run(PREFECT, "deployment", "run", name, *args).stdout
        found = re.search(r"UUID: ([0-9a-f-]{36})", output)
        assert found, output
        return found.group(1)

    def worker_once(self, *args: str, timeout: float = 240) -> str:
        """``prefect worker start --pool parallel-process --run-once``: runs what is due, waits for it, exits.

        Started in its own session so that a timeout kills the worker and its flow-run processes together.
        """
        log = self.home / f"worker-{time.monotonic_ns()}.log"
        with started([PREFECT, "worker", "start", "--pool", POOL, "--run-once", *args], self.env, log) as worker:
            try:
                worker.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the worker did not finish in {timeout} s:\n{log.read_text()[-4000:]}")
        output = log.read_text()
        assert worker.returncode == 0, output[-4000:]
        return output


def prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """The environment of every Prefect subprocess: nothing of the test session's Prefect settings, its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PARALLEL_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_API_URL=api_url,
        PREFECT_LOCAL_STORAGE_PATH=str(home / "results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        # Log the SQLite lock errors the server answers 503 (a lost trigger's cause is then in server.log).
        PREFECT_SERVER_LOG_RETRYABLE_ERRORS="true",
        # The scheduler: look every few seconds, and only a couple of runs ahead (the default is an hour's worth).
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="3",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME="PT30S",
        # Services these tests do not need.
        PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
        PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
        PREFECT_LOGGING_LOGGERS_HTTPX_LEVEL="WARNING",
    )
    return env


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``prefect server start`` on a free loopback port with a temporary SQLite home, until the session ends."""
    home = tmp_path_factory.mktemp("e2e")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api_url)
    log = home / "server.log"
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with started(command, env, log) as server:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"prefect server start exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no /api/health after 180 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield Stack(api_url=api_url, env=env, home=home)


@pytest.fixture(scope="package")
def emulator() -> Emulator:
    """The emulator of the end-to-end tests: the demo runs, accepting only ``E2E_KEY`` (tests may add runs)."""
    return Emulator(demo_runs(), api_keys=[E2E_KEY])


@pytest.fixture(scope="package")
def emulator_url(emulator: Emulator) -> Iterator[str]:
    """The emulator over real HTTP (a thread of this process)."""
    with run_emulator_server(emulator) as base_url:
        yield base_url


@pytest.fixture(scope="package")
def setup_runs(stack: Stack, emulator_url: str) -> SetupRuns:
    """The set-up command, run twice (the key in its environment only, never on a command line)."""
    command = (sys.executable, "-m", "parallel_tasks", "setup", "--emulator", emulator_url)
    first = stack.run(*command, PARALLEL_API_KEY=E2E_KEY)
    second = stack.run(*command, PARALLEL_API_KEY=E2E_KEY)
    return first, second
