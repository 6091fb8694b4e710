"""An audit's ledger: the summary and the manifest of many runs without a record per run kept in memory."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import random
import tempfile
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from prefect.filesystems import LocalFileSystem

from parallel_tasks.audit import BATCH_SIZE_MAX, default_batch_size
from parallel_tasks.ledger import ENTRY_FIELDS, AuditLedger
from parallel_tasks.manifests import ManifestKey, append_manifest, build_manifest, signed_message
from parallel_tasks.models import RunInputRecord, TaskRunInput
from parallel_tasks.records import build_failure_record, build_record, canonical_json, sealed
from parallel_tasks.rendering import PROBLEM_ORDER, shown_status, summary_row
from parallel_tasks.storage import write_streamed
from parallel_tasks.validation import check_task_run_input

GOOD = {"processor": "core", "input": "What is the GDP of France?", "metadata": {"team": "audit"}}
BAD = {"processor": "base", "input": "x", "metadata": {"a_key_that_is_far_too_long": "v"}}
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def stored(run_id: str, body: dict[str, Any], fetched_at: datetime, **changes: Any) -> RunInputRecord:
    """A record as ``latest.json`` holds it: sealed, with the content record it names."""
    run_input = TaskRunInput.model_validate(body)
    record = build_record(run_id, run_input, check_task_run_input(run_input), base_url="http://api")
    record = record.model_copy(update={"fetched_at": fetched_at, "content_record_sha256": "c" * 64, **changes})
    return sealed(record.model_copy(update={"input": None}))[0]


def mixed_records(count: int, seed: int) -> list[RunInputRecord]:
    """Every status and shown status, run ids in no order (some beyond ASCII), fetch times in several zones."""
    chance = random.Random(seed)
    records = []
    for number in range(count):
        run_id = f"trun_{chance.choice('aé€𝄞z')}{chance.randrange(10**6):06d}_{number}"
        fetched_at = (T0 + timedelta(seconds=chance.randrange(-3600, 3600))).astimezone(
            timezone(timedelta(hours=chance.choice([-5, 0, 9])))
        )
        kind = chance.randrange(6)
        if kind == 0:
            records.append(build_failure_record(run_id, RuntimeError("boom"), base_url="http://api"))
        elif kind == 1:
            records.append(stored(run_id, BAD, fetched_at))
        elif kind == 2:
            records.append(stored(run_id, GOOD, fetched_at, drift=True, previous_sha256="p" * 64))
        elif kind == 3:
            records.append(stored(run_id, GOOD, fetched_at, status="not_stored"))
        else:
            records.append(stored(run_id, GOOD, fetched_at))
    return records


def reference_manifest(records: list[RunInputRecord], created: datetime, key: ManifestKey | None) -> bytes:
    """The manifest as it was first built, whole in memory: the canonical form existing hashes depend on."""
    by_run = {record.run_id: record for record in records if record.status != "not_stored"}
    ordered = [by_run[run_id] for run_id in sorted(by_run)]
    entries = [[getattr(record, name) for name in ENTRY_FIELDS] for record in ordered]
    started = min((record.fetched_at for record in ordered), default=created)
    level = [hashlib.sha256(b"\x00" + canonical_json(entry)).digest() for entry in entries] or [
        hashlib.sha256().digest()
    ]
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    manifest: dict[str, Any] = {
        "manifest_version": 1,
        "chain": "audit-run-inputs/nightly",
        "sequence": 3,
        "previous": ["a" * 64, "b" * 64],
        "flow_run_id": "flow-1",
        "started_at": min(started, created).astimezone(timezone.utc).isoformat(),
        "created_at": created.astimezone(timezone.utc).isoformat(),
        "entry_fields": list(ENTRY_FIELDS),
        "count": len(entries),
        "merkle_root": level[0].hex(),
        "entries": entries,
    }
    if key is not None:
        manifest["signature"] = key.sign(signed_message(manifest))
    return canonical_json(manifest)


@pytest.mark.parametrize("count", [0, 1, 2, 5, 33, 2_500])
@pytest.mark.parametrize("signed", [False, True])
def test_a_manifest_written_entry_by_entry_is_byte_for_byte_the_one_built_whole(count: int, signed: bool) -> None:
    records = mixed_records(count, seed=count)
    records += [stored(r.run_id, GOOD, T0 + timedelta(days=1)) for r in records[: count // 3]]  # a later record wins
    key = ManifestKey.from_secret("manifest-hmac-key-0123456789abcdef") if signed else None
    created = T0 + timedelta(hours=2)
    built = build_manifest(
        records,
        chain="audit-run-inputs/nightly",
        sequence=3,
        previous=["b" * 64, "a" * 64],
        flow_run_id="flow-1",
        created_at=created,
        key=key,
    )
    expected = reference_manifest(records, created, key)
    assert canonical_json(built) == expected
    if count == 0:
        assert built["entries"] == [] and built["count"] == 0


def test_an_appended_manifest_is_named_by_the_hash_of_its_bytes(tmp_path: Path) -> None:
    records = mixed_records(300, seed=7)
    storage = LocalFileSystem(basepath=str(tmp_path))
    with AuditLedger.of(records) as ledger:
        written = asyncio.run(append_manifest(storage, ledger, chain="nightly", flow_run_id="flow-1"))
    data = (tmp_path / written.key).read_bytes()
    manifest = json.loads(data)
    assert hashlib.sha256(data).hexdigest() == written.sha256 and written.key.endswith(f"-{written.sha256}.json")
    assert manifest["merkle_root"] == written.merkle_root and manifest["count"] == written.count
    assert written.count == len({r.run_id for r in records if r.status != "not_stored"})
    assert canonical_json(manifest) == data
    assert not list(tmp_path.rglob("*.partial"))


def test_the_ledger_gives_the_rows_and_counts_of_sorting_every_record_at_once() -> None:
    records = mixed_records(1_000, seed=11)
    ledger = AuditLedger(max_rows=60)
    for start in range(0, len(records), 97):  # batches of odd sizes, each past the spare rows
        ledger.add(records[start : start + 97])
    ordered = sorted(records, key=lambda r: (PROBLEM_ORDER.index(shown_status(r)), r.run_id))
    with ledger:
        summary = ledger.summary(duplicates=2, manifest="m" * 64)
        assert summary.rows == [summary_row(record) for record in ordered[:60]]
        assert summary.total == 1_000 and sum(summary.counts.values()) == 1_000
        assert summary.counts["not_stored"] == sum(r.status == "not_stored" for r in records)
        assert summary.drifted == sum(r.drift for r in records)
        assert ledger.stored == sum(r.status != "not_stored" for r in records)
        problems = [summary_row(r) for r in ordered if shown_status(r) != "ok"][:50]
        assert ledger.problem_rows() == problems


def test_the_ledger_keeps_no_record_it_is_given() -> None:
    records = mixed_records(200, seed=3)
    alive = [weakref.ref(record) for record in records]
    with AuditLedger(max_rows=10) as ledger:
        ledger.add(records)
        del records
        gc.collect()
        assert not any(ref() is not None for ref in alive)
        assert ledger.total == 200


def test_the_first_fetch_time_is_the_earliest_whatever_the_zone() -> None:
    early = stored("trun_b", GOOD, (T0 - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=9))))
    late = stored("trun_a", GOOD, T0.astimezone(timezone(timedelta(hours=-5))))
    with AuditLedger.of([late, early]) as ledger:
        assert ledger.first_fetched_at() == T0 - timedelta(minutes=1)
    with AuditLedger() as empty:
        assert empty.first_fetched_at() is None and list(empty.entries()) == []


def test_a_streamed_write_that_breaks_leaves_no_partial_file(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))

    def broken(file: BinaryIO) -> str:
        file.write(b'{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(write_streamed(storage, "folder", broken))
    assert list((tmp_path / "folder").iterdir()) == []


def test_batches_grow_with_the_runs_only_up_to_their_cap() -> None:
    assert default_batch_size(100) == 50
    assert default_batch_size(6_000) == 500
    assert default_batch_size(100_000) == BATCH_SIZE_MAX == 1_000


def test_a_ledger_that_cannot_take_its_records_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    unplaceable = stored("trun_a", GOOD, datetime.min.replace(tzinfo=timezone(timedelta(hours=1))))
    with pytest.raises(OverflowError):
        AuditLedger.of([unplaceable])
    with AuditLedger():
        assert len(list(tmp_path.glob("parallel-audit-*.sqlite"))) == 1
    assert list(tmp_path.iterdir()) == []
