"""Secrets, part 2: no secret reaches Prefect's database, result storage, logs, artifacts, events, stored
records or exception text: not the key in use, and not a credential planted in any field of an input.

One run plants canaries everywhere a run input can hold them (top level, nested input, metadata, task
spec, MCP headers and URL, webhook URL, a 600-character value, a value a schema error quotes, the key
itself upper-cased and cut short). The fetch flow and the audit flow (batched and mapped) record it on
the session's Prefect server with result persistence on by default; then every text the API shows,
every stored record, the database files (with the WAL) and the result storage are searched byte for
byte. A session-scoped guard scans the database again when the whole session ends, after every other
suite, whatever order the modules ran in.

The search is proven to work: each place must hold a marker string this test put there through the
same flows (the planted run's id), next to where a canary would have leaked.
"""

from __future__ import annotations

import base64
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
from parallel_tasks.lineage import verify_record
from tests.conftest import CANARY_KEY
from tests.reliability.conftest import check_complete_run, save_credentials, stored_runs

pytestmark = [pytest.mark.usefixtures("prefect_harness", "fast_backoff"), pytest.mark.timeout(180)]

SECRET_HEADERS = "trun_c65bdf4253cd1c336f522f2967103ca0"  # a demo run whose MCP server headers hold a secret
MARKER = f"trun_dbmarker{uuid.uuid4().hex}"  # a known, non-secret string the search must find
PLANTED = f"trun_planted{uuid.uuid4().hex}"  # the run whose input holds the canaries
CANARY = f"cnry{uuid.uuid4().hex[:12]}"  # every planted credential starts with it


def planted_input() -> dict[str, Any]:
    """A run input with a credential in every field that can hold one."""
    return {
        "processor": "core",
        "api_key": f"{CANARY}-top-level",
        "input": {
            "question": f"marker {MARKER}; key in use {CANARY_KEY.upper()}, cut {CANARY_KEY[:11]}",
            "api_key": f"{CANARY}-typed",  # the schema wants an integer: its error quotes the value
            "account": {"login": "ops", "password": f"{CANARY}-nested"},
            "link": f"https://ops:{CANARY}-userinfo@files.example/report?token={CANARY}-query&page=2",
        },
        "metadata": {
            "passphrase": f"{CANARY}-passphrase",
            "api_key": f"{CANARY}-long-" + "x" * (600 - len(CANARY) - 6),  # too long: its preview is shown
            "team": "audit",
        },
        "task_spec": {
            "input_schema": {
                "type": "json",
                "json_schema": {
                    "type": "object",
                    "properties": {"api_key": {"type": "integer"}},
                    "x-auth-token": f"{CANARY}-spec",
                },
            },
            "output_schema": "text",
        },
        "mcp_servers": [
            {
                "type": "url",
                "name": "tools",
                "url": f"https://svc:{CANARY}-mcp-userinfo@mcp.example/sse?api_key={CANARY}-mcp-query",
                "headers": {"Authorization": f"Bearer {CANARY}-mcp-header"},
            }
        ],
        "webhook": {"url": f"https://hook:{CANARY}-hook-userinfo@hooks.example/in?sig={CANARY}-hook-sig"},
    }


PLANTED_PATHS = (
    "$.api_key",
    "$.input.account.password",
    "$.input.api_key",
    "$.input.link",
    "$.input.question",
    "$.mcp_servers[0].headers.Authorization",
    "$.mcp_servers[0].url",
    "$.metadata.api_key",
    "$.metadata.passphrase",
    "$.task_spec.input_schema.json_schema.x-auth-token",
    "$.webhook.url",
)


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


# The key in use and the planted canaries, in the case and encodings a file or JSON could hold them.
CANARY_FORMS = {
    form
    for text in (CANARY_KEY, CANARY_KEY[:8], CANARY_KEY[:8].upper(), CANARY, CANARY.upper())
    for form in (text.encode(), text.encode("utf-16-le"))
}


def leaks(text: str) -> bool:
    return any(form in text.encode() for form in CANARY_FORMS)


def scan(files: dict[Path, bytes]) -> dict[str, list[str]]:
    """Where a canary and the markers are found."""
    return {
        "canary": [str(path) for path, data in files.items() if any(form in data for form in CANARY_FORMS)],
        "marker": [str(path) for path, data in files.items() if MARKER.encode() in data or PLANTED.encode() in data],
    }


def result_storage_bytes() -> dict[Path, bytes]:
    """Every file of Prefect's result storage and of its home (``storage/`` included)."""
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH

    roots = {Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser(), Path(PREFECT_HOME.value()).expanduser()}
    files = [path for root in roots if root.exists() for path in root.rglob("*") if path.is_file()]
    return {path: decoded_result(path.read_bytes()) for path in files}


def decoded_result(data: bytes) -> bytes:
    """A result file as stored, plus what it holds decoded: Prefect writes a pickled result as base64,
    either bare or as the ``result`` of a JSON result record."""
    try:
        stored = json.loads(data)
        encoded = stored["result"] if isinstance(stored, dict) and isinstance(stored.get("result"), str) else ""
    except ValueError:
        encoded = data.decode("ascii", errors="replace")
    try:
        return data + base64.b64decode(encoded, validate=False)
    except ValueError:
        return data


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
    assert scan(files)["canary"] == [], "a canary reached the Prefect database"
    assert scan(result_storage_bytes())["canary"] == [], "a canary reached Prefect's result storage"


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
            filter=EventFilter(resource=EventResourceFilter(id_prefix=["parallel.task-run.", "parallel://task-runs/"])),
            limit=50,
        )
        seen += [event.model_dump_json() for event in events.events]
    return seen


def test_no_canary_reaches_any_sink(
    canary_guard: None, rel_emulator: Emulator, emu: Emulator, rel_url: str, tmp_path: Path
) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings

    storage = f"canary-db-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(tmp_path / "records")).save(storage, overwrite=True)
    storage_slug = f"local-file-system/{storage}"
    credentials = save_credentials(CANARY_KEY, rel_url, max_retries=4)
    emu.store.add(MARKER, {"processor": "core", "input": f"marker input {MARKER}"})
    emu.store.add(PLANTED, planted_input())
    # Random faults for the bulk of the runs; a fixed script for the runs whose outcome is asserted, so
    # their retries are exercised without a chance of running out of them.
    emu.set_faults(FaultConfig(rates={503: 0.3, 429: 0.1}, retry_after_s=0.01))
    for run_id in (MARKER, PLANTED, SECRET_HEADERS):
        emu.set_faults(FaultConfig(script=(503, 429), retry_after_s=0.01), run_id=run_id)
    emu.set_faults(FaultConfig(status=401), run_id="trun_00000000000000000000000000000401")
    emu.set_faults(FaultConfig(status=422), run_id="trun_00000000000000000000000000000422")
    invalid = [run_id for run_id in demo_runs() if run_id.startswith("trun_bad")]

    # With results persisted by default, every task that may hold a raw input must still not persist it.
    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        states = [
            fetch_run_input(PLANTED, credentials_block=credentials, storage_block=storage_slug, return_state=True),
            fetch_run_input(
                SECRET_HEADERS, credentials_block=credentials, storage_block=storage_slug, return_state=True
            ),
            fetch_run_input("trun_gone", credentials_block=credentials, return_state=True),
            audit_run_inputs(
                run_ids=[
                    MARKER,
                    PLANTED,
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
            audit_run_inputs(
                run_ids=[PLANTED, SECRET_HEADERS, MARKER],
                credentials_block=credentials,
                storage_block=storage_slug,
                per_run_artifacts=True,
                use_map=True,
                return_state=True,
            ),
        ]
    assert [state.type.value for state in states] == ["COMPLETED", "COMPLETED", "FAILED", "FAILED", "COMPLETED"]
    assert emu.requests_by_status[503] and emu.requests_by_status[429] and emu.requests_by_status[401]
    errors = [state.result(raise_on_failure=False) for state in states[2:3]]
    flow_run_ids = [state.state_details.flow_run_id for state in states]

    # The planted run was recorded, with its findings, and says what was masked.
    planted = stored_runs(tmp_path / "records")[PLANTED]
    record = check_complete_run(planted)
    assert record.status == "invalid" and record.redacted_paths == PLANTED_PATHS
    content = verify_record(planted.contents[0].read_bytes())
    assert {v.rule for v in content.violations} >= {"metadata.value_too_long", "input.schema_mismatch"}

    # Wait until the markers' log lines, artifacts and events are on the server, then read what the API shows.
    def markers_arrived() -> bool:
        texts = texts_from_the_api(flow_run_ids)
        return sum(MARKER in text for text in texts) >= 4 and sum(PLANTED in text for text in texts) >= 6

    wait_for(markers_arrived, "the markers in logs, artifacts and events")
    shown = texts_from_the_api(flow_run_ids)
    shown += [path.read_text() for path in (tmp_path / "records").rglob("*.json")]
    shown += [f"{error} {error!r} {getattr(error, '__dict__', '')}" for error in errors]
    shown += [str(state.message) for state in states]
    assert len(shown) > 100 and any(PLANTED in text and "[REDACTED]" in text for text in shown)
    assert any(f"# Run input `{PLANTED}`" in text for text in shown)  # the planted run's markdown artifact
    assert not [text for text in shown if leaks(text)]
    assert not [text for text in shown if "emu_sk_" in text or "Bearer sk-" in text]  # demo MCP header secrets

    # Prefect's result storage: the record tasks' results are there (persisted by default), raw inputs are not.
    results = result_storage_bytes()
    found = scan(results)
    assert found["marker"], "the search cannot even find the planted run in the result storage"
    assert found["canary"] == [], "a canary reached Prefect's result storage"

    # The database files themselves, byte for byte.
    def marker_in_database() -> bool:
        return bool(scan(database_bytes())["marker"])

    wait_for(marker_in_database, "the markers in the database files")
    files = database_bytes()
    assert database_path() in files and len(files[database_path()]) > 100_000  # found, and really the server's
    found = scan(files)
    assert found["marker"], "the search cannot even find the marker"
    assert found["canary"] == [], "a canary reached the Prefect database"
