"""The example flows on a Prefect test server against the emulator over HTTP: records, artifacts,
asset materializations, events, failures, drift, batching and the canary key."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from parallel_tasks import ParallelCredentials, run_input_cache_key
from parallel_tasks.audit import load_run_ids
from parallel_tasks.emulator import Emulator, FaultConfig
from parallel_tasks.flows import SUMMARY_ARTIFACT_KEY, audit_run_inputs, fetch_run_input
from parallel_tasks.ledger import AuditLedger
from parallel_tasks.lineage import artifact_key, asset_key, latest_key, verify_record
from parallel_tasks.publishing import AUDIT_REPORT_KEY, publish_audit
from parallel_tasks.records import build_failure_record
from parallel_tasks.verify import LocalStore, verify_store
from tests.conftest import CANARY_KEY

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
BAD_METADATA = "trun_89109e16101e7e3e169bfab28d7fa15b"
SECRET_HEADERS = "trun_c65bdf4253cd1c336f522f2967103ca0"


def artifacts(key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def flow_run_id(state: Any) -> UUID:
    return state.state_details.flow_run_id


def wait_for_logs(run_id: UUID, prefix: str, until: str, timeout: float = 60) -> list[str]:
    """Log messages of a flow run starting with ``prefix``, once one contains ``until``
    (Prefect ships logs to the server in the background, a moment after they are written).
    Fails, naming what it found, if that line never arrives."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        found = [log.message for log in sorted(logs, key=lambda log: log.timestamp) if log.message.startswith(prefix)]
        if any(until in message for message in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {prefix!r} log line containing {until!r} after {timeout:g}s; found {found}")
        time.sleep(0.5)


def stored_event_count(run_id: UUID, expected: int = 200, timeout: float = 60) -> int:
    """How many of the audit's per-run events the server stored for a flow run, once it has ``expected`` of them
    (the server writes events to its database a moment after it takes them), or when ``timeout`` runs out."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    names = EventNameFilter(name=["prefect.asset.materialization.succeeded", "parallel.task-run.input.failed"])
    related = EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"])
    wanted = EventFilter(event=names, related=related, occurred=EventOccurredFilter(since=datetime(2020, 1, 1)))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(wanted, limit=50)
            count = page.total
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def stored_records(folder: Path) -> tuple[list[Path], list[Path]]:
    """(latest pointers, content records) under a storage folder."""
    files = list(folder.glob("parallel-run-inputs/*/*.json"))
    return [f for f in files if f.name == "latest.json"], [f for f in files if f.name != "latest.json"]


def test_fetch_flow_records_everything(
    credentials_block: str, storage: tuple[str, Path], captured_events: Callable[[], list[Any]]
) -> None:
    slug, folder = storage
    state = fetch_run_input(GOOD, credentials_block=credentials_block, storage_block=slug, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary["status"], summary["verdict"], summary["processor"]) == ("ok", "valid", "core")

    record = verify_record((folder / summary["record_key"]).read_bytes())
    assert record.sha256 == summary["sha256"] and record.flow_run_id == str(flow_run_id(state))
    (manifest,) = folder.glob("parallel-run-inputs/_manifests/fetch-run-input/0*.json")
    assert manifest.stem.endswith(summary["manifest_sha256"]) and verify_store(LocalStore(folder)).clean
    assert record.task_run_id and record.base_url.startswith("http://127.0.0.1:")
    pointer = json.loads((folder / latest_key(GOOD)).read_text())
    assert pointer["sha256"] == summary["sha256"] and pointer["input"] is None

    (markdown,) = [a for a in artifacts(artifact_key(GOOD)) if a.flow_run_id == flow_run_id(state)]
    assert markdown.type == "markdown" and summary["sha256"] in markdown.data and "`core`" in markdown.data
    assert "| my_key | my_value | 6 | 8 | yes |" in markdown.data and "Every rule passed." in markdown.data
    assert not artifacts(artifact_key(GOOD) + "-metadata")  # the metadata is in the markdown, not a second artifact

    events = captured_events()  # one event for the run: its input's asset materialization
    (materialized,) = [e for e in events if e.resource.id in (asset_key(GOOD), f"parallel.task-run.{GOOD}")]
    assert materialized.event == "prefect.asset.materialization.succeeded"
    assert materialized.resource.id == asset_key(GOOD)
    assert materialized.payload["sha256"] == summary["sha256"] and materialized.payload["run_id"] == GOOD
    assert (materialized.payload["processor"], materialized.payload["verdict"]) == ("core", "valid")
    assert materialized.resource["parallel.task-run.id"] == GOOD
    assert [(r.role, r.id) for r in materialized.related] == [("flow-run", f"prefect.flow-run.{flow_run_id(state)}")]


def test_fetch_flow_fails_clearly_only_when_asked_or_when_the_fetch_fails(
    credentials_block: str, storage: tuple[str, Path]
) -> None:
    slug, _ = storage
    lenient = fetch_run_input(BAD_METADATA, credentials_block=credentials_block, storage_block=slug, return_state=True)
    assert lenient.is_completed() and lenient.result()["status"] == "invalid"
    strict = fetch_run_input(
        BAD_METADATA, credentials_block=credentials_block, storage_block=slug, fail_on_invalid=True, return_state=True
    )
    assert strict.is_failed()
    assert "is invalid: 1 error(s): $.metadata" in strict.message and "metadata.key_too_long" in strict.message
    missing = fetch_run_input("trun_missing", credentials_block=credentials_block, return_state=True)
    assert missing.is_failed() and "404 Not Found for run 'trun_missing': Run id not found" in missing.message


def test_drift_is_recorded_when_an_input_changes(
    credentials_block: str, storage: tuple[str, Path], clean_emulator: Emulator
) -> None:
    slug, folder = storage
    run_id = "trun_d71f7000000000000000000000000001"
    clean_emulator.store.add(run_id, {"processor": "base", "input": "What changed?"})
    first = fetch_run_input(run_id, credentials_block=credentials_block, storage_block=slug)
    same = fetch_run_input(run_id, credentials_block=credentials_block, storage_block=slug)
    clean_emulator.store.add(run_id, {"processor": "pro", "input": "What changed?"})
    changed = fetch_run_input(run_id, credentials_block=credentials_block, storage_block=slug)
    assert (first["drift"], same["drift"], changed["drift"]) == (False, False, True)
    assert first["sha256"] == same["sha256"] != changed["sha256"]
    record = verify_record((folder / changed["record_key"]).read_bytes())
    latest_markdown = max(artifacts(artifact_key(run_id)), key=lambda a: a.created)
    assert record.previous_sha256 == first["sha256"] and "**Changed from:**" in latest_markdown.data


def test_audit_of_200_runs_with_404s_and_503s_keeps_every_record(
    credentials_block: str,
    storage: tuple[str, Path],
    clean_emulator: Emulator,
    captured_events: Callable[[], list[Any]],
) -> None:
    slug, folder = storage
    run_ids = clean_emulator.store.ids()[:190] + [f"trun_{i:032x}" for i in range(10)]  # 10 unknown: 404
    clean_emulator.set_faults(FaultConfig(rates={503: 0.3}), run_id=None)
    for run_id in run_ids[:5]:  # a few runs answer 503 every time, past every retry
        clean_emulator.set_faults(FaultConfig(status=503), run_id=run_id)
    state = audit_run_inputs(
        run_ids=run_ids + run_ids[:3],
        credentials_block=credentials_block,
        storage_block=slug,
        max_concurrency=8,
        batch_size=40,
        return_state=True,
    )
    assert state.is_failed()
    assert state.message.startswith("15 of 200 runs could not be fetched")
    pointers, contents = stored_records(folder)
    assert len(pointers) == 200 and len({p.parent for p in pointers}) == 200
    statuses = [json.loads(p.read_text())["status"] for p in pointers]
    assert statuses.count("not_found") == 10 and statuses.count("failed") == 5
    assert len(contents) == 185 == sum(s in ("ok", "invalid") for s in statuses)
    for path in contents:
        verify_record(path.read_bytes())
    assert clean_emulator.requests_by_status[503] > 20  # the faults really happened and were retried
    (summary,) = [a for a in artifacts(SUMMARY_ARTIFACT_KEY) if a.flow_run_id == flow_run_id(state)]
    rows = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    assert len(rows) == 200 and {r["status"] for r in rows} >= {"ok", "invalid", "not_found", "failed"}
    events = captured_events()  # one event per run: 185 materializations, 15 inputs not fetched
    ours = [e for e in events if e.resource.id.startswith(("parallel://", "parallel.task-run."))]
    assert len(ours) == 200 and len({e.payload["run_id"] for e in ours}) == 200
    assert sum(e.event == "prefect.asset.materialization.succeeded" for e in ours) == 185
    assert sum(e.event == "parallel.task-run.input.failed" for e in ours) == 15
    assert stored_event_count(flow_run_id(state)) == 200  # and the server has every one of them
    # The manifest: verify finds the store clean, and its hash is where the store cannot rewrite it.
    report = verify_store(LocalStore(folder))
    assert report.clean and report.counts["manifests"] == 1, report.findings
    (manifest_file,) = folder.glob("parallel-run-inputs/_manifests/audit-run-inputs/0*.json")
    manifest_sha256 = manifest_file.stem.split("-")[1]
    assert state.message.endswith(f"; manifest sha256 {manifest_sha256}")
    assert manifest_sha256 in (summary.description or "")
    (written,) = [e for e in events if e.event == "parallel.audit.manifest.written"]
    assert written.payload["manifest_sha256"] == manifest_sha256 and written.payload["count"] == 200
    assert written.resource.id == "parallel.audit-chain.audit-run-inputs"
    distinct = len(set(run_ids))
    batch_count = math.ceil(distinct / 40)
    progress = wait_for_logs(flow_run_id(state), "Progress:", until="(100%)")
    # Each 40-run batch is at least a tenth of the runs, so each one finishing logs a line.
    assert len(progress) == batch_count and progress[-1].startswith(f"Progress: {distinct}/{distinct} runs (100%)")
    done = [int(line.split()[1].split("/")[0]) for line in progress]
    assert done == sorted(done) and len(set(done)) == len(done)
    with get_client(sync_client=True) as client:
        batches = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id(state)]))
        )
    assert sum(t.name.startswith("audit-batch-") for t in batches) == batch_count


def test_audit_with_map_option_and_a_run_id_file(
    credentials_block: str, storage: tuple[str, Path], clean_emulator: Emulator, tmp_path: Path
) -> None:
    slug, folder = storage
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"# demo runs\n{GOOD}\n\n{BAD_METADATA}\ntrun_missing\n")
    assert load_run_ids(ids_file) == [GOOD, BAD_METADATA, "trun_missing"]
    state = audit_run_inputs(
        run_ids_file=str(ids_file),
        credentials_block=credentials_block,
        storage_block=slug,
        use_map=True,
        fail_on_errors=False,
        return_state=True,
    )
    assert state.is_completed() and state.message.startswith("3 runs: 1 ok, 1 invalid, 1 not_found; manifest sha256 ")
    assert len(stored_records(folder)[0]) == 3
    assert verify_store(LocalStore(folder)).clean


def test_load_run_ids_formats(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(["a", "b"]))
    assert load_run_ids(path) == ["a", "b"]
    path.write_text(json.dumps(["a", 1]))
    with pytest.raises(ValueError, match="list of strings"):
        load_run_ids(path)


def test_prefect_retries_only_retryable_errors(credentials_block: str, clean_emulator: Emulator) -> None:
    from prefect import flow

    from parallel_tasks import retrieve_task_run_input
    from parallel_tasks.tasks import retry_even_after_client_retries

    quick = retrieve_task_run_input.with_options(
        retry_delay_seconds=0, retry_jitter_factor=None, retry_condition_fn=retry_even_after_client_retries
    )
    clean_emulator.set_faults(FaultConfig(script=(503, 503, 503, 503, "ok")), run_id=GOOD)

    @flow
    def fetch(run_id: str) -> str:
        return quick(run_id, credentials=credentials_block).processor

    assert fetch(GOOD) == "core"
    assert clean_emulator.requests_by_run[GOOD] == 5  # asked for: 4 client attempts, then one Prefect retry
    missing = fetch("trun_not_there", return_state=True)
    assert missing.is_failed() and clean_emulator.requests_by_run["trun_not_there"] == 1


def test_prefect_does_not_retry_what_the_server_said_not_to(credentials_block: str, clean_emulator: Emulator) -> None:
    """A 429 asking for an hour stops the client at once; the task's own retries must not go against it."""
    from prefect import flow

    from parallel_tasks import retrieve_task_run_input

    quick = retrieve_task_run_input.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    clean_emulator.set_faults(FaultConfig(script=(429, "ok"), retry_after_s=3600), run_id=GOOD)

    @flow
    def fetch(run_id: str) -> str:
        return quick(run_id, credentials=credentials_block).processor

    state = fetch(GOOD, return_state=True)
    assert state.is_failed() and "429" in (state.message or "")
    assert clean_emulator.requests_by_run[GOOD] == 1


def test_cache_key_uses_base_url_and_run_id_only(credentials_block: str) -> None:
    one = ParallelCredentials(api_key="key-one", base_url="https://api.parallel.ai")
    two = ParallelCredentials(api_key="key-two", base_url="https://api.parallel.ai")
    other = ParallelCredentials(api_key="key-one", base_url="https://proxy.example.com")
    key = run_input_cache_key(None, {"run_id": "trun_a", "credentials": one})  # type: ignore[arg-type]
    assert key == run_input_cache_key(None, {"run_id": "trun_a", "credentials": two})  # type: ignore[arg-type]
    assert key != run_input_cache_key(None, {"run_id": "trun_b", "credentials": one})  # type: ignore[arg-type]
    assert key != run_input_cache_key(None, {"run_id": "trun_a", "credentials": other})  # type: ignore[arg-type]
    assert "key-one" not in key
    by_name = run_input_cache_key(None, {"run_id": "trun_a", "credentials": credentials_block})  # type: ignore[arg-type]
    assert by_name != key and by_name.startswith("parallel-run-input-")


def test_canary_key_never_reaches_prefect(
    emulator_url: str, storage: tuple[str, Path], clean_emulator: Emulator, captured_events: Callable[[], list[Any]]
) -> None:
    slug, folder = storage
    ParallelCredentials(api_key=CANARY_KEY, base_url=emulator_url).save("canary-credentials", overwrite=True)
    clean_emulator.set_faults(FaultConfig(rates={503: 0.3, 429: 0.1}, retry_after_s=0.0))
    fetched = fetch_run_input(
        SECRET_HEADERS, credentials_block="canary-credentials", storage_block=slug, return_state=True
    )
    missing = fetch_run_input("trun_gone", credentials_block="canary-credentials", return_state=True)
    audit = audit_run_inputs(
        run_ids=[*clean_emulator.store.ids()[:40], "trun_gone"],
        credentials_block="canary-credentials",
        storage_block=slug,
        per_run_artifacts=True,
        return_state=True,
    )
    assert fetched.is_completed() and missing.is_failed() and audit.is_failed()
    assert clean_emulator.requests_by_status[503] > 0 and clean_emulator.requests_by_status[200] >= 30
    ids = [flow_run_id(s) for s in (fetched, missing, audit)]
    sources: dict[str, list[str]] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        sources["flow runs"] = [
            text for run in runs for text in (json.dumps(run.parameters), str(run.state.message if run.state else ""))
        ]
        task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids)))
        sources["task runs"] = [task_run.model_dump_json() for task_run in task_runs]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        sources["logs"] = [log.message for log in logs]
        sources["artifacts"] = [a.model_dump_json() for a in client.read_artifacts()]
    sources["records"] = [path.read_text() for path in folder.rglob("*.json")]
    sources["events"] = [e.model_dump_json() for e in captured_events()]
    # Every place was really looked at: each holds something from these runs.
    assert all(sources.values()), {name: len(texts) for name, texts in sources.items()}
    assert len(sources["flow runs"]) == 2 * len(ids)
    seen = [text for texts in sources.values() for text in texts]
    assert not [text for text in seen if CANARY_KEY in text]
    # The MCP header secret of the demo run was masked everywhere too.
    assert not [text for text in seen if "emu_sk_" in text or "Bearer sk-" in text]


def test_dask_task_runner_gives_the_same_records_as_the_default(
    credentials_block: str, clean_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    # Dask workers are other processes: they find the test server through the environment.
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    run_ids = [*clean_emulator.store.ids()[:60], "trun_missing"]
    folders = {}
    for runner in ("default", "dask"):
        LocalFileSystem(basepath=str(tmp_path / runner)).save(f"records-{runner}", overwrite=True)
        folders[runner] = tmp_path / runner
        audit = audit_run_inputs
        if runner == "dask":
            cluster = {"n_workers": 2, "threads_per_worker": 1, "processes": True}
            audit = audit_run_inputs.with_options(task_runner=DaskTaskRunner(cluster_kwargs=cluster))
        state = audit(
            run_ids=run_ids,
            credentials_block=credentials_block,
            storage_block=f"local-file-system/records-{runner}",
            batch_size=20,
            return_state=True,
        )
        assert state.is_failed() and state.message.startswith("1 of 61 runs could not be fetched")

    def contents(folder: Path) -> dict[str, Any]:
        found = {}
        for path in folder.glob("parallel-run-inputs/*/*.json"):
            record = json.loads(path.read_text())
            found[str(path.relative_to(folder))] = {k: record[k] for k in ("run_id", "status", "sha256", "input")}
        return found

    default, dask = contents(folders["default"]), contents(folders["dask"])
    assert len(default) == 61 + 60 and default == dask


def test_audit_shows_progress_and_names_its_problem_runs(credentials_block: str, clean_emulator: Emulator) -> None:
    missing = "trun_5b0e9c2d7a4f41e3b6c8d0a2f4e6a8c1"
    state = audit_run_inputs(
        run_ids=[GOOD, BAD_METADATA, missing],
        credentials_block=credentials_block,
        per_run_artifacts=True,
        fail_on_errors=False,
        return_state=True,
    )
    with get_client(sync_client=True) as client:
        made = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id={"any_": [flow_run_id(state)]}))
    (progress,) = [a for a in made if a.type == "progress"]
    assert progress.data == 100.0 and progress.description == f"{'█' * 20} 3 of 3 runs audited"
    (report,) = [a for a in made if a.key == AUDIT_REPORT_KEY]
    assert f"[{missing}](/artifacts/key/{artifact_key(missing)}) **not_found**" in str(report.data)
    named = wait_for_logs(flow_run_id(state), "Run trun_", until=missing)
    assert named == [
        f"Run {BAD_METADATA} is invalid: metadata.key_too_long",
        f"Run {missing} is not_found: 404 Not Found: Run id not found",
    ]


def test_task_retries_do_not_multiply_the_clients(credentials_block: str, clean_emulator: Emulator) -> None:
    clean_emulator.set_faults(FaultConfig(status=503), run_id=GOOD)
    state = fetch_run_input(GOOD, credentials_block=credentials_block, return_state=True)
    assert state.is_failed() and "503" in (state.message or "")
    assert clean_emulator.requests_by_status[503] == 4  # the client's 4 attempts, no task retry on top


def test_signed_manifests_from_a_secret_block(
    credentials_block: str, storage: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    from parallel_tasks.manifests import ManifestKey
    from parallel_tasks.settings import SIGNING_BLOCK_ENV_VAR
    from parallel_tasks.verify import main as verify

    slug, folder = storage
    signing_key = "signing-key-5e1f0a2b3c4d5e6f"
    Secret(value=signing_key).save("manifest-signing", overwrite=True)
    monkeypatch.setenv(SIGNING_BLOCK_ENV_VAR, "manifest-signing")
    fetch_run_input(GOOD, credentials_block=credentials_block, storage_block=slug)
    fetch_run_input(BAD_METADATA, credentials_block=credentials_block, storage_block=slug)
    assert verify_store(LocalStore(folder), key=ManifestKey.from_secret(signing_key)).clean
    assert verify(["--path", str(folder), "--signing-key-block", "manifest-signing"]) == 0
    wrong = verify_store(LocalStore(folder), key=ManifestKey.from_secret(signing_key + "-wrong"))
    assert [f.kind for f in wrong.findings] == ["signature", "signature"]
    assert not [p for p in folder.rglob("*.json") if signing_key in p.read_text()]


def test_a_strict_fetch_fails_without_quoting_a_secret_it_found_invalid(
    credentials_block: str, storage: tuple[str, Path], clean_emulator: Emulator
) -> None:
    slug, _ = storage
    secret = "sk-live-4f2a9c1e7b3d5a60"
    run_id = "trun_4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b"
    clean_emulator.store.add(
        run_id,
        {
            "processor": "base",
            "input": {"api_key": secret},
            "task_spec": {
                "input_schema": {"json_schema": {"type": "object", "properties": {"api_key": {"type": "integer"}}}},
                "output_schema": {"type": "text"},
            },
        },
    )
    state = fetch_run_input(
        run_id, credentials_block=credentials_block, storage_block=slug, fail_on_invalid=True, return_state=True
    )
    assert state.is_failed() and "input.schema_mismatch" in str(state.message)
    assert secret not in str(state.message) and secret[:8] not in str(state.message)


def test_a_capped_summary_table_says_so_where_people_see_it() -> None:
    from prefect import flow

    records = [
        build_failure_record(f"trun_{i:032x}", RuntimeError("boom"), base_url="https://api.parallel.ai")
        for i in range(3)
    ]

    @flow
    def publish() -> None:
        with AuditLedger.of(records, max_rows=2) as ledger:
            publish_audit(ledger.summary(), ledger, per_run_artifacts=False)

    state = publish(return_state=True)
    (table,) = [a for a in artifacts(SUMMARY_ARTIFACT_KEY) if a.flow_run_id == flow_run_id(state)]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert len(rows) == 2 and "; the table lists 2 of the 3 runs, problems first" in (table.description or "")
    (report,) = [a for a in artifacts(AUDIT_REPORT_KEY) if a.flow_run_id == flow_run_id(state)]
    assert "The summary table lists 2 of the 3 runs, problems first; left out: 1 failed." in str(report.data)


def test_a_progress_bar_the_server_cannot_move_is_logged_not_raised(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The bar is a view of the audit: a server blip while moving it must not end an audit writing records."""
    import logging

    import httpx
    import prefect.artifacts
    from prefect import flow

    from parallel_tasks.publishing import AuditProgress

    def server_blip(*args: Any, **kwargs: Any) -> None:
        raise httpx.ConnectError("All connection attempts failed")

    @flow
    def audit_with_a_bar() -> int:
        progress = AuditProgress(4, logging.getLogger("bar"))
        monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", server_blip)
        progress.advance(2)
        progress.advance(2)
        return progress.done

    assert audit_with_a_bar() == 4
    moved = [r.getMessage() for r in caplog.records if r.name == "bar" and r.levelno == logging.WARNING]
    assert len(moved) == 2 and all("Could not move the progress bar" in m and "connection attempts" in m for m in moved)
