"""The OpenLineage event builders as pure functions: records in, spec-valid JSON out; and the configuration check."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

import parallel_tasks.openlineage as ol
from parallel_tasks.models import RunInputRecord, Violation
from parallel_tasks.settings import DEFAULT_OPENLINEAGE_TIMEOUT
from tests.flows.openlineage_support import schema_errors

RUN = "trun_0123456789abcdef0123456789abcdef"
FLOW_RUN = "6f1c2f9e-8a7b-4c3d-9e2f-1a2b3c4d5e6f"


def record(**changes: object) -> RunInputRecord:
    fields: dict[str, object] = {
        "run_id": RUN,
        "status": "ok",
        "sha256": "a" * 64,
        "record_key": f"parallel-run-inputs/{RUN}/{'a' * 64}.json",
        "fetched_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "base_url": "https://api.parallel.ai",
        "flow_run_id": FLOW_RUN,
        "processor": "base",
        "verdict": "valid",
    }
    return RunInputRecord.model_validate({**fields, **changes})


def event_with(*records: RunInputRecord, storage: object = None) -> dict[str, object]:
    outputs = [ol.storage_dataset(storage or LocalFileSystem(basepath="/data/audit"), records_written=len(records))]
    return ol.run_event(
        "COMPLETE",
        run_id=FLOW_RUN,
        job_namespace="default",
        job_name="audit-run-inputs/nightly",
        inputs=[ol.input_dataset(r) for r in records],
        outputs=outputs,
        run_facets={
            "parent": ol.parent_facet(FLOW_RUN, "default", "audit-run-inputs"),
            "errorMessage": ol.error_facet("x"),
        },
    )


def test_a_drifted_invalid_input_is_a_valid_event_with_its_hash_and_findings() -> None:
    findings = tuple(
        Violation(path=f"$.metadata.k{i}", rule="metadata.key_too_long", severity="error", message="long")
        for i in range(ol.FINDINGS_PER_INPUT + 20)
    )
    drifted = record(status="invalid", verdict="invalid", violations=findings, drift=True, previous_sha256="b" * 64)
    event = event_with(drifted, record(run_id="a/b c"))
    assert schema_errors(event) == []
    dataset = event["inputs"][0]  # type: ignore[index]
    assert dataset["facets"]["version"]["datasetVersion"] == "a" * 64
    custom = dataset["facets"]["parallelRunInput"]
    assert (custom["drift"], custom["previousSha256"], custom["errors"]) == (True, "b" * 64, 70)
    assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) == len(ol.RULE_FAMILIES) + ol.FINDINGS_PER_INPUT  # bounded, however many findings
    assert event["inputs"][1]["name"] == "tasks/runs/a%2Fb%20c/input"  # type: ignore[index]


def test_a_record_that_is_not_a_dataset_version_breaks_the_schema_check() -> None:
    event = event_with(record())
    event["inputs"][0]["facets"]["version"].pop("datasetVersion")  # type: ignore[index]
    event["inputs"][0]["facets"]["parallelRunInput"]["status"] = "lost"  # type: ignore[index]
    errors = schema_errors(event)
    assert any("datasetVersion" in e for e in errors) and any("'lost'" in e for e in errors)


def test_storage_datasets_follow_the_naming_of_files_and_buckets() -> None:
    assert ol.storage_dataset(LocalFileSystem(basepath="/data/audit"))["name"] == "/data/audit/parallel-run-inputs"
    remote = ol.storage_dataset(RemoteFileSystem(basepath="s3://user:hunter2@audit-bucket/records/"))
    assert (remote["namespace"], remote["name"]) == ("s3://audit-bucket", "records/parallel-run-inputs")
    s3_block = SimpleNamespace(bucket_name="audit-bucket", bucket_folder="prod")
    assert ol.storage_dataset(s3_block)["namespace"] == "s3://audit-bucket"
    gcs_block = SimpleNamespace(bucket="audit-bucket", bucket_folder="")
    assert (ol.storage_dataset(gcs_block)["namespace"], ol.storage_dataset(gcs_block)["name"]) == (
        "gs://audit-bucket",
        "parallel-run-inputs",
    )


def test_only_the_clients_own_configuration_turns_events_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert not ol.is_configured({}, cwd=tmp_path)
    assert ol.is_configured({"OPENLINEAGE_URL": "http://marquez:5000"}, cwd=tmp_path)
    assert ol.is_configured({"OPENLINEAGE__TRANSPORT__TYPE": "console"}, cwd=tmp_path)
    assert not ol.is_configured(
        {"OPENLINEAGE_URL": "http://marquez:5000", "OPENLINEAGE_DISABLED": "TRUE"}, cwd=tmp_path
    )
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert ol.is_configured({}, cwd=tmp_path)
    assert not ol.is_configured({"OPENLINEAGE_CONFIG": str(home / "missing.yml")}, cwd=home)
    (home / ".openlineage").mkdir()
    (home / ".openlineage" / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert ol.is_configured({}, cwd=home)


def test_the_budget_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ol.TIMEOUT_ENV_VAR, raising=False)
    assert ol._timeout() == DEFAULT_OPENLINEAGE_TIMEOUT
    monkeypatch.setenv(ol.TIMEOUT_ENV_VAR, "0.25")
    assert ol._timeout() == 0.25


@pytest.mark.parametrize("raw", ["", "0", "-1", "soon", "inf", "nan"])
def test_an_unusable_budget_is_named(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ol.TIMEOUT_ENV_VAR, raw)
    with pytest.raises(ValueError, match="PARALLEL_OPENLINEAGE_TIMEOUT"):
        ol._timeout()


def test_the_http_transport_is_bounded_unless_its_retries_are_configured() -> None:
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    default = HttpTransport(HttpConfig.from_dict({"url": "http://127.0.0.1:9", "timeout": 60}))
    chosen = HttpTransport(HttpConfig.from_dict({"url": "http://127.0.0.1:9", "retry": {"total": 2}}))
    ol._bound_transport(default, 1.5)
    ol._bound_transport(chosen, 1.5)
    assert (default.timeout, default.config.retry["total"]) == (1.5, 0)
    assert (chosen.timeout, chosen.config.retry["total"]) == (1.5, 2)
