"""Limits of the audit: every accepted run id gets its record, ``max_concurrency`` bounds the requests in
flight over the whole audit, and runs that were fetched but not stored are reported as such."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem

from parallel_tasks import ParallelCredentials, TaskRunInput
from parallel_tasks.client import validate_run_id
from parallel_tasks.emulator import Emulator, FaultConfig, demo_runs, generate_runs
from parallel_tasks.emulator.server import serve_in_thread
from parallel_tasks.flows import audit_run_inputs
from parallel_tasks.lineage import build_record, content_key, latest_key, read_latest, store_record, verify_record
from parallel_tasks.validation import check_task_run_input

KEY = "limits-test-key-0123456789"
GOOD = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
LONG_ASCII = "r" * 256
LONG_ACCENTED = "é" * 100


class CountingApp:
    """An ASGI app in front of the emulator's that counts the requests in flight (one event loop: no lock)."""

    def __init__(self, app: Any) -> None:
        self.app, self.in_flight, self.peak, self.requests = app, 0, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.in_flight += 1
        self.requests += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


@pytest.fixture
def counted(prefect_harness: None) -> Iterator[tuple[Emulator, CountingApp, str]]:
    """An emulator of its own (demo runs, 60 generated ones, and the long run ids), behind a counter,
    served over HTTP, and a credentials block for it."""
    import uvicorn

    runs = {**demo_runs(), **generate_runs(60, seed=5)}
    runs[LONG_ASCII] = runs[LONG_ACCENTED] = runs[GOOD]
    emulator = Emulator(runs, api_keys=[KEY])
    counter = CountingApp(emulator.app)
    config = uvicorn.Config(counter, lifespan="off", access_log=False, log_config=None, log_level="warning")
    with serve_in_thread(uvicorn.Server(config)) as base_url:
        name = f"limits-{uuid.uuid4().hex[:8]}"
        ParallelCredentials(api_key=KEY, base_url=base_url, max_retries=1).save(name, overwrite=True)
        yield emulator, counter, name


@pytest.mark.parametrize(
    "run_id",
    [LONG_ASCII, LONG_ACCENTED, "r" * 255, "é" * 42],
    ids=["256-ascii", "100-accented", "255-ascii", "42-accented"],
)
async def test_every_accepted_run_id_gets_its_records(tmp_path: Path, run_id: str) -> None:
    validate_run_id(run_id)  # the client accepts it
    run_input = TaskRunInput.model_validate(demo_runs()[GOOD])
    record = build_record(run_id, run_input, check_task_run_input(run_input), base_url="https://api.parallel.ai")
    storage = LocalFileSystem(basepath=str(tmp_path))
    stored = await store_record(storage, record)
    assert verify_record((tmp_path / content_key(run_id, stored.sha256 or "")).read_bytes()).run_id == run_id
    latest = await read_latest(storage, run_id)
    assert latest is not None and latest.run_id == run_id and latest.sha256 == stored.sha256
    (folder,) = (tmp_path / "parallel-run-inputs").iterdir()
    assert len(folder.name.encode()) <= 255


def test_short_run_ids_keep_their_paths_and_long_ones_cannot_collide() -> None:
    assert latest_key("r" * 255) == f"parallel-run-inputs/{'r' * 255}/latest.json"
    assert latest_key("é" * 42) == f"parallel-run-inputs/{'%C3%A9' * 42}/latest.json"
    assert latest_key("a:b") == "parallel-run-inputs/a%3Ab/latest.json"
    long_key = latest_key(LONG_ACCENTED)
    segment = long_key.split("/")[1]
    assert segment.startswith("%C3%A9" * 21) and "%~" in segment  # readable, cut between escapes, hashed
    assert latest_key(LONG_ACCENTED + "x") != long_key and latest_key(LONG_ASCII) != latest_key(LONG_ASCII + "r")
    assert latest_key(segment) != long_key  # the hashed segment, used as a run id, lands elsewhere


def test_max_concurrency_bounds_requests_over_the_whole_audit(
    counted: tuple[Emulator, CountingApp, str], storage: tuple[str, Path]
) -> None:
    emulator, counter, credentials_block = counted
    emulator.set_faults(FaultConfig(latency_ms=30))  # every request lasts long enough to overlap another
    run_ids = emulator.store.ids()[:40]
    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=credentials_block,
        storage_block=storage[0],
        max_concurrency=1,
        batch_size=10,  # four batches, as many as run at once
        fail_on_errors=False,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert counter.requests >= 40 and counter.peak == 1


def test_the_audit_records_long_run_ids(counted: tuple[Emulator, CountingApp, str], storage: tuple[str, Path]) -> None:
    _, _, credentials_block = counted
    slug, folder = storage
    state = audit_run_inputs(
        run_ids=[LONG_ASCII, LONG_ACCENTED, GOOD], credentials_block=credentials_block, storage_block=slug
    )
    assert state.counts["ok"] == 3, state.rows
    pointers = list(folder.glob("parallel-run-inputs/*/latest.json"))
    assert sorted(json.loads(p.read_text())["run_id"] for p in pointers) == sorted([LONG_ASCII, LONG_ACCENTED, GOOD])


@pytest.mark.parametrize("use_map", [False, True])
def test_runs_fetched_but_not_stored_are_not_called_unfetched(
    counted: tuple[Emulator, CountingApp, str], tmp_path: Path, use_map: bool
) -> None:
    _, _, credentials_block = counted
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("records cannot go under a file")
    name = f"broken-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(blocker)).save(name, overwrite=True)
    state = audit_run_inputs(
        run_ids=[GOOD, "trun_missing"],
        credentials_block=credentials_block,
        storage_block=f"local-file-system/{name}",
        use_map=use_map,
        return_state=True,
    )
    assert state.is_failed()
    assert state.message.startswith(
        "1 of 2 runs could not be fetched; 1 of 2 runs were fetched but their records could not be stored"
    )
    assert "; the audit's manifest could not be written;" in state.message  # logged, and the summary kept
    summary = state.result(raise_on_failure=False)
    rows = {row["run_id"]: row for row in summary.rows}
    assert (
        rows[GOOD]["status"] == "not_stored"
        and "input fetched, but its record could not be stored" in (rows[GOOD]["detail"])
    )
    assert rows["trun_missing"]["status"] == "not_found"  # a fetch failure stays one


def test_with_map_a_run_that_cannot_be_stored_does_not_lose_the_others(
    counted: tuple[Emulator, CountingApp, str], storage: tuple[str, Path]
) -> None:
    """One run's folder blocked (a file where its folder goes): that run is not_stored, the others are recorded
    and in the manifest, as with batches."""
    _, _, credentials_block = counted
    slug, folder = storage
    blocked = folder / Path(latest_key(GOOD)).parent
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a folder")
    state = audit_run_inputs(
        run_ids=[GOOD, "trun_missing"], credentials_block=credentials_block, storage_block=slug, use_map=True,
        fail_on_errors=False, return_state=True,
    )  # fmt: skip
    summary = state.result()
    assert summary.counts["not_stored"] == 1 and summary.counts["not_found"] == 1
    assert (folder / latest_key("trun_missing")).is_file() and summary.manifest_sha256 is not None
