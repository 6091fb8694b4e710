"""Lineage records as pure logic and storage: canonical JSON, keys, redaction, drift, verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

import parallel_tasks.storage as storage_module
from parallel_tasks import NotFoundError, TaskRunInput
from parallel_tasks.emulator import generate_runs
from parallel_tasks.lineage import (
    artifact_key,
    asset_key,
    build_failure_record,
    build_record,
    canonical_json,
    content_key,
    latest_key,
    metadata_table,
    render_markdown,
    sha256_hex,
    store_record,
    summarize,
    verify_record,
)
from parallel_tasks.models import RunInputRecord, ValidationReport, Violation
from parallel_tasks.records import record_hash, sealed, without_input
from parallel_tasks.redaction import REDACTED
from parallel_tasks.validation import check_task_run_input

BODY = {
    "processor": "core",
    "input": {"country": "France", "year": 2023},
    "metadata": {"team": "audit", "api_token": "tok-abcdef-123456", "max_tokens": 300},
    "mcp_servers": [
        {
            "url": "https://mcp.example.com/sse?token=q-secret-1",
            "name": "crm",
            "headers": {"Authorization": "Bearer mcp-secret-999"},
        }
    ],
}
RUN = "trun_0123456789abcdef0123456789abcdef"


def record_of(body: dict, run_id: str = RUN):  # type: ignore[no-untyped-def]
    run_input = TaskRunInput.model_validate(body)
    return build_record(run_id, run_input, check_task_run_input(run_input), base_url="https://api.parallel.ai")


def test_canonical_json_is_stable_and_sorted() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_a_sealed_record_is_stored_as_the_canonical_json_of_the_whole() -> None:
    """``sealed`` joins two serialized halves and the hash; they must give byte for byte the canonical JSON of the
    whole record, and a hash ``verify_record`` accepts: content records and pointers, with unicode, findings and
    no input at all."""
    runs = generate_runs(150, seed=12)
    for run_id, body in runs.items():
        content = record_of(body, run_id).model_copy(update={"previous_sha256": "ab" * 32, "drift": True})
        for record in (content, content.model_copy(update={"input": None, "content_record_sha256": "cd" * 32})):
            stored, data = sealed(record)
            assert data == canonical_json(stored.model_dump(mode="json"))
            assert stored.record_sha256 == record_hash(json.loads(data)) and stored.record_version == 2
        verify_record(sealed(content)[1])
    unicode = record_of({**BODY, "input": {"q": 'é ü 日本 \u2028 "quoted"'}})
    assert sealed(unicode)[1] == canonical_json(sealed(unicode)[0].model_dump(mode="json"))


def test_a_kept_record_is_the_record_without_its_input_sharing_one_set_of_field_names() -> None:
    first, second = record_of(BODY), record_of({**BODY, "processor": "base"}, "trun_" + "f" * 32)
    kept = [without_input(first), without_input(second)]
    assert kept[0].input is None and first.input is not None
    assert kept[0].model_dump() == first.model_copy(update={"input": None}).model_dump()
    assert kept[1].processor == "base" and kept[1].run_id == "trun_" + "f" * 32
    assert kept[0].model_fields_set is kept[1].model_fields_set  # one set for all, not 0.7 KB per run


def test_keys() -> None:
    assert artifact_key("trun_AB12") == "parallel-run-input-trun-ab12"
    assert artifact_key("we.ird:id") == "parallel-run-input-we-ird-id"
    assert asset_key(RUN) == f"parallel://task-runs/{RUN}/input"
    assert asset_key("a&b~c") == "parallel://task-runs/a~26b~7ec/input"
    assert latest_key("a:b") == "parallel-run-inputs/a%3Ab/latest.json"
    assert content_key(RUN, "ff") == f"parallel-run-inputs/{RUN}/ff.json"


def test_record_is_redacted_and_hashed() -> None:
    record = record_of(BODY)
    text = record.model_dump_json()
    for secret in ("tok-abcdef-123456", "mcp-secret-999", "q-secret-1"):
        assert secret not in text
    assert record.input is not None
    assert record.input["metadata"] == {"team": "audit", "api_token": REDACTED, "max_tokens": 300}
    assert record.input["mcp_servers"][0]["headers"] == {"Authorization": REDACTED}
    assert record.sha256 == sha256_hex(canonical_json(record.input))
    assert record.record_key == content_key(RUN, record.sha256)
    assert (record.status, record.verdict, record.processor) == ("ok", "valid", "core")


def test_same_input_same_hash_different_input_different_hash() -> None:
    assert record_of(BODY).sha256 == record_of(json.loads(json.dumps(BODY))).sha256
    assert record_of({**BODY, "processor": "pro"}).sha256 != record_of(BODY).sha256


def test_verify_record_detects_tampering() -> None:
    stored = sealed(record_of(BODY))[1]  # as the storage writes it
    assert verify_record(stored).run_id == RUN
    tampered = json.loads(stored)
    tampered["input"]["processor"] = "ultra"
    with pytest.raises(ValueError, match="altered"):
        verify_record(json.dumps(tampered))
    failure = build_failure_record(RUN, NotFoundError("gone", status_code=404, run_id=RUN), base_url="x")
    with pytest.raises(ValueError, match="holds no input"):
        verify_record(sealed(failure)[1])


def test_failure_records_name_the_status() -> None:
    record = build_failure_record(RUN, NotFoundError("Run id not found", status_code=404, run_id=RUN), base_url="u")
    assert (record.status, record.sha256, record.input) == ("not_found", None, None)
    assert "404 Not Found" in (record.error or "")


def test_markdown_and_metadata_table() -> None:
    body = {**BODY, "metadata": {"a_key_that_is_far_too_long": "v", "ok": "x" * 600}}
    run_input = TaskRunInput.model_validate(body)
    record = build_record(RUN, run_input, check_task_run_input(run_input), base_url="https://api.parallel.ai")
    markdown = render_markdown(record)
    for expected in (
        RUN,
        "`core`",
        record.sha256,
        "metadata.key_too_long",
        "metadata.value_too_long",
        "invalid",
        "France",
    ):
        assert str(expected) in markdown
    rows = {r["key"]: r for r in metadata_table(record)}
    assert (
        rows["a_key_that_is_far_too_long"]["key_length"] == 26
        and not rows["a_key_that_is_far_too_long"]["within_limits"]
    )
    assert rows["ok"]["value_length"] == 600 and len(rows["ok"]["value"]) == 80


async def test_store_record_is_content_addressed_and_notices_drift(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    first = await store_record(storage, record_of(BODY))
    again = await store_record(storage, record_of(BODY))
    assert (first.drift, again.drift, again.previous_sha256) == (False, False, first.sha256)
    changed = await store_record(storage, record_of({**BODY, "processor": "ultra"}))
    assert changed.drift and changed.previous_sha256 == first.sha256
    # A failed audit in between keeps the last known hash, so drift is still noticed afterwards.
    await store_record(storage, build_failure_record(RUN, RuntimeError("boom"), base_url="u"))
    back = await store_record(storage, record_of(BODY))
    assert back.drift and back.previous_sha256 == changed.sha256
    files = sorted(p.name for p in (tmp_path / "parallel-run-inputs" / RUN).iterdir())
    assert files == sorted([f"{first.sha256}.json", f"{changed.sha256}.json", "latest.json"])
    for name in files:
        if name != "latest.json":
            verify_record((tmp_path / "parallel-run-inputs" / RUN / name).read_bytes())
    latest = json.loads((tmp_path / "parallel-run-inputs" / RUN / "latest.json").read_text())
    assert latest["sha256"] == first.sha256 and latest["input"] is None


async def test_a_pointer_left_broken_by_a_crash_is_repaired(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    pointer = tmp_path / latest_key(RUN)
    pointer.parent.mkdir(parents=True)
    pointer.write_text('{"run_id": "trun_0123", "sta')
    stored = await store_record(storage, record_of(BODY))
    assert stored.previous_sha256 is None and json.loads(pointer.read_text())["sha256"] == stored.sha256


def test_summarize_counts_and_rows() -> None:
    records = [
        record_of(BODY, run_id="b"),
        build_failure_record("a", NotFoundError("x", status_code=404), base_url="u"),
        record_of({**BODY, "metadata": {"k" * 17: 1}}, run_id="c"),
    ]
    summary = summarize(records, duplicates=2)
    assert summary.total == 3 and summary.duplicates == 2 and summary.not_fetched == 1
    assert summary.counts == {"ok": 1, "invalid": 1, "not_found": 1, "unauthorized": 0, "failed": 0, "not_stored": 0}
    assert [row["run_id"] for row in summary.rows] == ["a", "c", "b"]  # not_found, invalid, ok
    assert summary.rows[1]["detail"] == "metadata.key_too_long" and summary.rows[1]["errors"] == 1
    assert summary.describe() == "3 runs: 1 ok, 1 invalid, 1 not_found"
    assert ValidationReport(violations=(Violation(path="$", rule="r", severity="warning", message="m"),)).verdict == (
        "valid_with_warnings"
    )


@pytest.mark.parametrize("run_id", ["", ".", "..", "../..", "a/../b"])
async def test_records_of_refused_run_ids_stay_inside_their_folder(tmp_path: Path, run_id: str) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path / "records"))
    await store_record(storage, build_failure_record(run_id, ValueError("refused"), base_url="u"))
    (written,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written.parent.parent == tmp_path / "records" / "parallel-run-inputs"
    assert json.loads(written.read_text())["run_id"] == run_id


async def test_local_writes_are_atomic_and_leave_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    stored = await store_record(storage, record_of(BODY))
    folder = tmp_path / "parallel-run-inputs" / RUN
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{stored.sha256}.json", "latest.json"])

    def crash_halfway(path: str, data: bytes) -> None:  # the disk fills up (or the process dies) mid-write
        with open(path, "wb") as file:
            file.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(storage_module, "_create", crash_halfway)
    with pytest.raises(OSError, match="No space left"):
        await store_record(storage, record_of({**BODY, "processor": "pro"}))
    monkeypatch.undo()
    # Whatever was torn is not in place: every record under its real name is whole, and the pointer is unchanged.
    for path in folder.glob("*.json"):
        RunInputRecord.model_validate_json(path.read_bytes())
    assert RunInputRecord.model_validate_json((folder / "latest.json").read_bytes()).sha256 == stored.sha256


async def test_other_filesystem_blocks_go_through_their_own_api(tmp_path: Path) -> None:
    from prefect.filesystems import RemoteFileSystem

    storage = RemoteFileSystem(basepath=f"memory://records/{tmp_path.name}")  # fsspec's in-memory filesystem
    first = await store_record(storage, record_of(BODY))
    again = await store_record(storage, record_of({**BODY, "processor": "pro"}))
    assert again.drift and again.previous_sha256 == first.sha256
    verify_record(await storage.aread_path(content_key(RUN, again.sha256 or "")))
    assert not (tmp_path / "parallel-run-inputs").exists()
