"""The command: option parsing in-process, and one real run as a subprocess stopped by its PID."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from parallel_tasks.emulator import demo_runs, generate_runs
from parallel_tasks.emulator.__main__ import build_emulator, build_parser
from tests.emulator.conftest import run_path
from tests.emulator.spec import response_problems

DEMO = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"


def emulator_for(*argv: str):  # type: ignore[no-untyped-def]
    return build_emulator(build_parser().parse_args(list(argv)))


@contextmanager
def command(*argv: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run the command; yield the process and the base URL it printed; stop it by PID."""
    process = subprocess.Popen(
        [sys.executable, "-m", "parallel_tasks.emulator", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_command_serves_generated_runs_and_stops_on_sigterm() -> None:
    runs = generate_runs(5, seed=3)
    run_id, body = next(iter(runs.items()))
    with command("--port", "0", "--runs", "5", "--seed", "3", "--api-key", "K", "--rate-503", "0") as (
        proc,
        url,
    ):
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(url + run_path(run_id), headers={"x-api-key": "K"})
        assert response.status_code == 200 and response.json() == body
        assert not response_problems(200, response.headers["content-type"], response.content)
        unauthorized = httpx.get(url + run_path(run_id))
        assert unauthorized.status_code == 401
        assert not response_problems(401, unauthorized.headers["content-type"], unauthorized.content)
        assert httpx.get(url + run_path(DEMO), headers={"x-api-key": "K"}).status_code == 404  # no --demo
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert proc.stdout is not None and proc.stdout.read() == ""  # the URL is the only stdout line
        assert proc.stderr is not None
        told = proc.stderr.read()  # what a person needs: where, which key, how many runs
        assert f"Parallel API emulator at {url}, serving 5 runs" in told
        assert "Accepted x-api-key: K\n" in told
        assert f"python -m parallel_tasks setup --emulator {url}" in told


def test_command_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parallel_tasks.emulator", "--port", "0", "--rate-503", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "rates" in result.stderr


def test_defaults_serve_the_demo_set_on_loopback_with_the_test_key() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8787)
    emulator = build_emulator(args)
    assert set(emulator.store) == set(demo_runs())
    assert emulator.api_keys == {"test-key"}


def test_sources_combine(tmp_path: Path) -> None:
    path = tmp_path / "extra.jsonl"
    path.write_text(json.dumps({"run_id": "trun_file", "run_input": {"processor": "base", "input": "q"}}) + "\n")
    emulator = emulator_for(
        "--runs", "4", "--seed", "2", "--demo", "--runs-file", str(path), "--api-key", "a", "--api-key", "b"
    )
    assert set(emulator.store) == set(generate_runs(4, seed=2)) | set(demo_runs()) | {"trun_file"}
    assert emulator.api_keys == {"a", "b"}


def test_fault_options_map_to_the_fault_config() -> None:
    emulator = emulator_for(
        "--latency-ms", "5", "--jitter-ms", "3", "--rate-429", "0.1", "--rate-reset", "0.05",
        "--retry-after", "ms", "--retry-after-s", "2", "--slow-chunks", "6", "--slow-chunk-delay-ms", "7",
        "--seed", "9",
        "--script", f"{DEMO}=503,reset,ok", "--run-status", "trun_gone=404",
    )  # fmt: skip
    faults = emulator.faults
    assert (faults.latency_ms, faults.jitter_ms, faults.retry_after, faults.retry_after_s) == (5, 3, "ms", 2)
    assert faults.rates == {429: 0.1, "reset": 0.05}
    assert (faults.slow_chunks, faults.slow_chunk_delay_ms, emulator.seed) == (6, 7, 9)
    key = {"x-api-key": "test-key"}
    assert [emulator.handle("GET", run_path(DEMO), key).fault for _ in range(3)] == ["503", "reset", None]
    assert emulator.handle("GET", run_path("trun_gone"), key).status == 404


@pytest.mark.parametrize("bad", ["no-equals-sign", "=503", "run="])
def test_script_option_needs_run_id_and_value(bad: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--script", bad])
