"""Secrets, part 2: the canary key never reaches Prefect's database, logs, artifacts, stored records or
exception text. The module's name sorts last in this folder, so by the time it runs the other suites
(the crash test's subprocess included) have already pushed the canary through flows on the same
Prefect test server; it then pushes the canary through every flow path itself, so it proves something on
its own too, and reads the server's SQLite files byte for byte. A session-scoped guard scans them once
more when the whole session ends, after every other suite.

The search is proven to work: the database must be found, be non-empty, and contain a marker string
this test put there through the same flows (a run id), next to where the key would have leaked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.audit_run_inputs import audit_run_inputs
from flows.fetch_run_input import fetch_run_input
from parallel_tasks.emulator import Emulator, FaultConfig, demo_runs
from tests.conftest import CANARY_KEY
from tests.reliability.conftest import save_credentials

pytestmark = [pytest.mark.usefixtures("prefect_harness", "fast_backoff"), pytest.mark.timeout(180)]

SECRET_HEADERS = "trun_5ec2e700000000000000000000000001"  # a demo run whose MCP server headers hold a secret
MARKER = f"trun_dbmarker{uuid.uuid4().hex}"  # a known, non-secret string the search must find


def database_path() -> Path:
    """The SQLite file of the Prefect server the tests talk to, from the harness's settings."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    assert url.startswith("sqlite+aiosqlite:///"), url
    return Path(url.removeprefix("sqlite+aiosqlite:///"))


def database_bytes() -> dict[Path, bytes]:
    """The database and its write-ahead log and shared-memory files (recent writes live in the WAL)."""
    main = database_path()
    files = [main, main.with_name(main.name + "-wal"), main.with_name(main.name + "-shm")]
    return {path: path.read_bytes() for path in files if path.exists()}


def scan(files: dict[Path, bytes]) -> dict[str, list[str]]:
    """Where the canary (in any encoding a file or JSON could hold it) and the marker are found."""
    canary_forms = {CANARY_KEY.encode(), CANARY_KEY.encode("utf-16-le"), json.dumps(CANARY_KEY).encode()}
    return {
        "canary": [str(path) for path, data in files.items() if any(form in data for form in canary_forms)],
        "marker": [str(path) for path, data in files.items() if MARKER.encode() in data],
    }


@pytest.fixture(scope="session")
def canary_guard(prefect_harness: None) -> Iterator[None]:
    """At the very end of the session (before the harness stops its server), scan the database again."""
    yield
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()
    files = database_bytes()
    assert sum(len(data) for data in files.values()) > 100_000
    assert scan(files)["canary"] == [], "the canary key reached the Prefect database"


def wait_for(found: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll until ``found()``; logs and events reach the server in the background, a moment later."""
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def texts_from_the_api(flow_run_ids: list[Any]) -> list[str]:
    """What the Prefect API shows for these flow runs: parameters, states, task runs, logs, artifacts, events."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.events.filters import EventFilter, EventResourceFilter

    seen: list[str] = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))):
            seen.append(run.model_dump_json())
        filter_ = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=flow_run_ids))
        seen += [task_run.model_dump_json() for task_run in client.read_task_runs(task_run_filter=filter_)]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
        seen += [log.model_dump_json() for log in logs]
        seen += [artifact.model_dump_json() for artifact in client.read_artifacts()]
        events = client.read_events(
            filter=EventFilter(resource=EventResourceFilter(id_prefix=["parallel.task-run."])), limit=50
        )
        seen += [event.model_dump_json() for event in events.events]
    return seen


def test_canary_never_reaches_the_prefect_database(
    canary_guard: None, rel_emulator: Emulator, emu: Emulator, rel_url: str, tmp_path: Path
) -> None:
    from prefect.filesystems import LocalFileSystem

    storage = f"canary-db-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(tmp_path / "records")).save(storage, overwrite=True)
    storage_slug = f"local-file-system/{storage}"
    credentials = save_credentials(CANARY_KEY, rel_url, max_retries=4)
    emu.store.add(MARKER, {"processor": "core", "input": f"marker input {MARKER}"})
    emu.set_faults(FaultConfig(rates={503: 0.3, 429: 0.1}, retry_after_s=0.01))
    emu.set_faults(FaultConfig(status=401), run_id="trun_00000000000000000000000000000401")
    emu.set_faults(FaultConfig(status=422), run_id="trun_00000000000000000000000000000422")
    invalid = [run_id for run_id in demo_runs() if run_id.startswith("trun_bad")]

    states = [
        fetch_run_input(MARKER, credentials_block=credentials, storage_block=storage_slug, return_state=True),
        fetch_run_input(SECRET_HEADERS, credentials_block=credentials, storage_block=storage_slug, return_state=True),
        fetch_run_input("trun_gone", credentials_block=credentials, return_state=True),
        audit_run_inputs(
            run_ids=[
                MARKER,
                SECRET_HEADERS,
                *invalid,
                *rel_emulator.store.ids()[:30],
                "trun_00000000000000000000000000000401",
                "trun_00000000000000000000000000000422",
                "trun_gone",
            ],
            credentials_block=credentials,
            storage_block=storage_slug,
            per_run_artifacts=True,
            batch_size=10,
            return_state=True,
        ),
    ]
    assert [state.type.value for state in states] == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    assert emu.requests_by_status[503] and emu.requests_by_status[429] and emu.requests_by_status[401]
    errors = [state.result(raise_on_failure=False) for state in states[2:3]]
    flow_run_ids = [state.state_details.flow_run_id for state in states]

    # Wait until the marker's log lines and events are on the server, then read what the API shows.
    def marker_arrived() -> bool:
        return sum(MARKER in text for text in texts_from_the_api(flow_run_ids)) >= 4

    wait_for(marker_arrived, "the marker in logs, artifacts and events")
    shown = texts_from_the_api(flow_run_ids)
    shown += [path.read_text() for path in (tmp_path / "records").rglob("*.json")]
    shown += [f"{error} {error!r} {getattr(error, '__dict__', '')}" for error in errors]
    shown += [str(state.message) for state in states]
    assert len(shown) > 100 and any(MARKER in text for text in shown)
    assert not [text for text in shown if CANARY_KEY in text]
    assert not [text for text in shown if "emu_sk_" in text or "Bearer sk-" in text]  # MCP header secrets masked

    # The database files themselves, byte for byte.
    def marker_in_database() -> bool:
        return bool(scan(database_bytes())["marker"])

    wait_for(marker_in_database, "the marker in the database files")
    files = database_bytes()
    assert database_path() in files and len(files[database_path()]) > 100_000  # found, and really the server's
    found = scan(files)
    assert found["marker"], "the search cannot even find the marker"
    assert found["canary"] == [], "the canary key reached the Prefect database"
