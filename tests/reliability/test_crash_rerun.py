"""Crash and rerun: the audit flow's process is SIGKILLed mid-run, then the flow runs again on the same
run ids. What was stored before the crash is neither lost nor duplicated, and the rerun records the rest.

The flow runs in a subprocess of its own (its own PREFECT_HOME and result storage, the key from
PARALLEL_API_KEY), talking to the session's Prefect test server and to this suite's emulator over HTTP.
Emulator latency keeps the first run busy for several seconds, so the kill lands once some records exist.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from parallel_tasks.emulator import Emulator, FaultConfig
from parallel_tasks.lineage import verify_record
from parallel_tasks.models import RunInputRecord
from parallel_tasks.verify import LocalStore, verify_store
from tests.conftest import CANARY_KEY, REPO
from tests.reliability.conftest import check_complete_run, stored_runs, stray_files

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(240)]

RUNS = 300
KILL_AT = 60  # latest.json files present before the kill
BATCH_SIZE = 25
CONCURRENCY = 4  # 4 batch tasks at a time, one request in flight each
LATENCY_MS = 100  # 4 requests per 100 ms: the first run needs ~8 s for all 300 runs


def subprocess_env(home: Path, base_url: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness is not active"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PARALLEL_"))}
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PARALLEL_TASKS_TEST_HOME=str(home),
        PARALLEL_API_KEY=CANARY_KEY,
        PARALLEL_BASE_URL=base_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


def start_audit(ids_file: Path, env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.audit_in_subprocess",
                str(ids_file),
                str(BATCH_SIZE),
                str(CONCURRENCY),
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing it starts outlives the test
        )


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def snapshot(folder: Path) -> dict[str, dict[str, bytes]]:
    """Every file stored per run id: {run_id: {file name: bytes}}."""
    return {
        run_id: {path.name: path.read_bytes() for path in [*run.latest, *run.contents, *run.partials, *run.others]}
        for run_id, run in stored_runs(folder).items()
    }


def parsed_pointer(files: dict[str, bytes]) -> RunInputRecord | None:
    """The run's pointer as the crash left it, if it was written in full."""
    try:
        return RunInputRecord.model_validate_json(files["latest.json"])
    except (KeyError, ValueError):
        return None


def test_killed_audit_is_rerun_without_losing_or_duplicating_records(
    emu: Emulator, rel_url: str, rel_runs: dict[str, Any], tmp_path: Path
) -> None:
    run_ids = list(rel_runs)[-RUNS:]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(run_ids) + "\n")
    env = subprocess_env(tmp_path, rel_url)
    folder = tmp_path / "storage"
    emu.set_faults(FaultConfig(latency_ms=LATENCY_MS))

    # First run: wait until some records are stored, then SIGKILL the flow's process.
    first = start_audit(ids_file, env, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 90
        while len(list(folder.glob("parallel-run-inputs/*/latest.json"))) < KILL_AT:
            assert first.poll() is None, f"the flow ended before the kill:\n{(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, f"no records in 90 s:\n{(tmp_path / 'first.log').read_text()}"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_group(first)
    before = snapshot(folder)
    first_log = (tmp_path / "first.log").read_text()
    assert "flow finished" not in first_log
    assert KILL_AT <= len(before) < RUNS, f"{len(before)} runs stored at the kill"
    assert set(before) <= set(run_ids)
    # What a completed record looked like at the crash: a full pointer and the content record it names.
    recorded_before = {}
    for run_id, files in before.items():
        pointer = parsed_pointer(files)
        if pointer is not None and f"{pointer.sha256}.json" in files:
            verify_record(files[f"{pointer.sha256}.json"])
            recorded_before[run_id] = pointer
    assert len(recorded_before) >= KILL_AT - CONCURRENCY  # at most one record per batch in flight was cut short

    # Rerun on the same ids, without latency, to the end.
    emu.set_faults(None)
    emu.reset()
    second = start_audit(ids_file, env, tmp_path / "second.log")
    try:
        assert second.wait(timeout=150) == 0, (tmp_path / "second.log").read_text()
    finally:
        stop_group(second)
    second_log = (tmp_path / "second.log").read_text()
    assert f"flow finished: COMPLETED: {RUNS} runs: {RUNS} ok" in second_log, second_log

    # Every run id: exactly one pointer and one content record, which verifies.
    runs = stored_runs(folder)
    assert sorted(runs) == sorted(run_ids) and not stray_files(folder)
    after = {run_id: check_complete_run(run) for run_id, run in runs.items()}
    # A temporary file of an atomic write may outlive the killed process; never one of the rerun's.
    partials = [path.name for run in runs.values() for path in run.partials]
    assert all(f".{first.pid}." in name for name in partials), partials
    # The records stored before the crash are still there, byte for byte, and the rerun knew them.
    for run_id, pointer in recorded_before.items():
        content = f"{pointer.sha256}.json"
        assert (runs[run_id].folder / content).read_bytes() == before[run_id][content], run_id
        assert after[run_id].sha256 == pointer.sha256 and after[run_id].previous_sha256 == pointer.sha256
        assert not after[run_id].drift
    # The rerun fetched every run again (once each: no faults) and recorded the ones the crash cut off.
    assert emu.requests_by_run == dict.fromkeys(run_ids, 1)
    assert {run_id for run_id in run_ids if after[run_id].previous_sha256 is None} == set(run_ids) - set(
        recorded_before
    )
    # The killed run left records but no manifest; the rerun's manifest covers them all: verify passes.
    report = verify_store(LocalStore(folder))
    assert report.clean and report.counts["manifests"] == 1 and report.counts["runs"] == RUNS, report.findings
    # The key went through both processes (PARALLEL_API_KEY) and never into their output.
    assert CANARY_KEY not in first_log + second_log
