"""The tamper-evident trail without a Prefect server: whole-record hashes, manifests, Merkle proofs,
chains, signatures, and ``verify`` catching and naming each kind of tampering."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.filesystems import LocalFileSystem

from parallel_tasks import manifests
from parallel_tasks.emulator import generate_runs
from parallel_tasks.manifests import (
    ManifestKey,
    append_manifest,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_inclusion,
)
from parallel_tasks.models import RunInputRecord, TaskRunInput
from parallel_tasks.records import (
    build_failure_record,
    build_record,
    canonical_json,
    content_key,
    latest_key,
    record_hash,
    sealed,
    sha256_hex,
    verify_record,
)
from parallel_tasks.storage import store_record
from parallel_tasks.validation import check_task_run_input
from parallel_tasks.verify import LocalStore, Report, main, prove, verify_store

RUNS = generate_runs(6, seed=5)
RUN_IDS = sorted(RUNS)
HMAC_SECRET = "manifest-hmac-key-0123456789abcdef"
CHAIN = "audit-run-inputs/nightly"


async def audit(
    folder: Path, run_ids: list[str], *, flow_run_id: str, key: ManifestKey | None = None, changed: str | None = None
) -> list[RunInputRecord]:
    """What an audit flow does to the store: store each run's record, then append the manifest."""
    storage = LocalFileSystem(basepath=str(folder))
    stored = []
    for run_id in run_ids:
        body = dict(RUNS[run_id])
        if run_id == changed:
            body["metadata"] = {**body.get("metadata", {}), "edited": "yes"}
        run_input = TaskRunInput.model_validate(body)
        record = build_record(
            run_id, run_input, check_task_run_input(run_input), base_url="http://api", flow_run_id=flow_run_id
        )
        stored.append(await store_record(storage, record))
    await append_manifest(storage, stored, chain=CHAIN, flow_run_id=flow_run_id, key=key)
    return stored


def build_store(folder: Path, key: ManifestKey | None = None) -> Path:
    """Three audits: all runs, then a few with one input changed (drift), then all again with that input
    changed back (its first record is kept, not rewritten)."""
    asyncio.run(audit(folder, RUN_IDS, flow_run_id="flow-1", key=key))
    asyncio.run(audit(folder, RUN_IDS[:3], flow_run_id="flow-2", key=key, changed=RUN_IDS[0]))
    asyncio.run(audit(folder, RUN_IDS, flow_run_id="flow-3", key=key))
    return folder


def check(folder: Path, **options: Any) -> Report:
    return verify_store(LocalStore(folder), **options)


def kinds(report: Report) -> set[tuple[str, str]]:
    """(kind, file) of each finding, the file relative to the store."""
    return {(f.kind, f.path) for f in report.findings}


def manifest_files(folder: Path) -> list[Path]:
    return sorted((folder / manifests.chain_folder(CHAIN)).glob("0*.json"))


def reseal(path: Path, change: dict[str, Any]) -> None:
    """What a careful forger does: change fields and recompute the record's own hash."""
    fields = {**json.loads(path.read_bytes()), **change}
    fields["record_sha256"] = record_hash(fields)
    path.write_bytes(canonical_json(fields))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return build_store(tmp_path / "store")


# --- records ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", "invalid"),
        ("verdict", "invalid"),
        ("violations", [{"rule": "x", "severity": "error", "path": "$", "message": "m"}]),
        ("run_id", "trun_other"),
        ("processor", "ultra"),
        ("base_url", "http://elsewhere"),
        ("fetched_at", "2020-01-01T00:00:00Z"),
        ("drift", True),
        ("record_key", "elsewhere.json"),
        ("redacted_paths", ["$.metadata.token"]),  # a field this version does not know is covered too
    ],
)
def test_whole_record_hash_covers_every_field(store: Path, field: str, value: Any) -> None:
    path = store / content_key(RUN_IDS[1], json.loads((store / latest_key(RUN_IDS[1])).read_bytes())["sha256"])
    assert verify_record(path.read_bytes()).record_version == 2
    fields = json.loads(path.read_bytes())
    fields[field] = value
    with pytest.raises(ValueError, match="altered: record_sha256"):
        verify_record(canonical_json(fields))


def test_legacy_records_are_read_and_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = RUN_IDS[0]
    run_input = TaskRunInput.model_validate(RUNS[run_id])
    legacy = build_record(run_id, run_input, check_task_run_input(run_input), base_url="http://api")
    assert legacy.record_version == 1 and legacy.record_sha256 is None
    with pytest.raises(ValueError, match="is a version 1 record, without a whole-record hash"):
        verify_record(canonical_json(legacy.model_dump(mode="json")))
    assert verify_record(canonical_json(legacy.model_dump(mode="json")), allow_legacy=True).record_version == 1
    folder = tmp_path / "legacy"
    for key, record in ((content_key(run_id, legacy.sha256 or ""), legacy), (latest_key(run_id), legacy)):
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        body = record.model_dump(mode="json") | ({"input": None} if key.endswith("latest.json") else {})
        (folder / key).write_bytes(canonical_json(body))
    (folder / content_key(run_id, "0" * 64)).with_name(".interrupted.partial").write_bytes(b"{")
    report = check(folder)
    assert report.clean, report.findings
    assert report.counts["records_v1"] == 1 and report.counts["legacy_unlisted"] == 2
    assert report.counts["partial_files"] == 1
    assert main(["--path", str(folder)]) == 0  # notes, not findings: the auditor is told, the exit stays clean
    said = capsys.readouterr().out
    assert "note: 2 legacy records (written before manifests) are in no manifest" in said
    assert "note: 1 temporary files of interrupted writes" in said


def test_run_ids_cannot_reach_the_manifest_folder() -> None:
    assert latest_key("_manifests") == "parallel-run-inputs/%5Fmanifests/latest.json"
    assert content_key("_x", "ab") == "parallel-run-inputs/%5Fx/ab.json"


# --- Merkle tree ----------------------------------------------------------------------------------


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) straight from RFC 6962, section 2.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def test_merkle_root_is_rfc6962_and_every_leaf_has_a_proof() -> None:
    for n in range(34):
        leaves = [leaf_hash([f"run-{i}", "ok"]) for i in range(n)]
        root = merkle_root(leaves)
        assert root == rfc6962_root(leaves), n
        for index in range(n):
            proof = inclusion_proof(leaves, index)
            assert verify_inclusion(leaves[index], index, n, proof, root), (n, index)
            assert not verify_inclusion(leaf_hash(["other", "ok"]), index, n, proof, root)
            if proof:
                assert not verify_inclusion(leaves[index], index, n, proof[:-1], root)
    # Leaves and nodes are domain-separated: an inner node cannot pass for a leaf.
    assert leaf_hash(["a"]) != hashlib.sha256(canonical_json(["a"])).digest()


def test_prove_prints_a_checked_inclusion_proof(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proof = prove(LocalStore(store), RUN_IDS[4])
    assert proof is not None and proof["verified"] and proof["tree_size"] == len(RUN_IDS)
    assert proof["manifest"] == str(manifest_files(store)[-1].relative_to(store))
    assert main(["--path", str(store), "--prove", RUN_IDS[4]]) == 0
    printed = json.loads(capsys.readouterr().out)
    audit_path = [bytes.fromhex(p) for p in printed["audit_path"]]
    leaf = leaf_hash(printed["entry"])
    assert verify_inclusion(
        leaf, printed["leaf_index"], printed["tree_size"], audit_path, bytes.fromhex(printed["merkle_root"])
    )
    assert main(["--path", str(store), "--prove", "trun_unknown"]) == 1


# --- verify: clean, and each tampering caught and named -------------------------------------------


def test_clean_store_passes(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = check(store)
    assert report.clean, report.findings
    assert report.counts["runs"] == 6 and report.counts["content_records"] == 7  # one run had two inputs
    assert report.counts["manifests"] == 3 and report.counts["chains"] == 1 and not report.notes
    assert main(["--path", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] is True


def test_one_byte_of_a_record(store: Path) -> None:
    path = store / latest_key(RUN_IDS[2])
    target = store / json.loads(path.read_bytes())["record_key"]
    raw = bytearray(target.read_bytes())
    raw[raw.index(b'"processor":"') + 13] ^= 0x01
    target.write_bytes(bytes(raw))
    found = kinds(check(store))
    assert ("altered", str(target.relative_to(store))) in found


def test_record_and_name_replaced_together(store: Path) -> None:
    run_id = RUN_IDS[3]
    pointer_path = store / latest_key(run_id)
    pointer = json.loads(pointer_path.read_bytes())
    old = store / pointer["record_key"]
    fields = json.loads(old.read_bytes())
    fields["input"]["metadata"] = {"forged": "yes"}
    digest = sha256_hex(canonical_json(fields["input"]))
    fields.update(sha256=digest, record_key=content_key(run_id, digest))
    fields["record_sha256"] = record_hash(fields)
    new = store / content_key(run_id, digest)
    new.write_bytes(canonical_json(fields))
    old.unlink()
    reseal(pointer_path, {"sha256": digest, "record_key": content_key(run_id, digest),
                          "content_record_sha256": fields["record_sha256"]})  # fmt: skip
    found = kinds(check(store))
    rel = str(pointer_path.relative_to(store))
    assert ("missing", str(old.relative_to(store))) in found
    assert ("orphan", str(new.relative_to(store))) in found
    assert ("uncovered", rel) in found


def test_resealed_record_edit_is_caught_by_the_manifest(store: Path) -> None:
    """Changing a verdict and recomputing the record's own hash still disagrees with the manifest."""
    pointer = json.loads((store / latest_key(RUN_IDS[1])).read_bytes())
    target = store / pointer["record_key"]
    reseal(target, {"verdict": "invalid", "status": "invalid"})
    found = kinds(check(store))
    assert ("altered", str(target.relative_to(store))) in found


def test_deleted_record(store: Path) -> None:
    target = store / json.loads((store / latest_key(RUN_IDS[5])).read_bytes())["record_key"]
    target.unlink()
    found = kinds(check(store))
    assert ("missing", str(target.relative_to(store))) in found


def test_deleted_newest_manifest(store: Path) -> None:
    newest = manifest_files(store)[-1]
    published = newest.name.split("-")[1][:-5]
    newest.unlink()
    report = check(store, expected_manifests=(published,))
    found = {kind for kind, _ in kinds(report)}
    assert {"uncovered", "head", "missing"} <= found
    assert any(published in f.message for f in report.findings if f.kind == "missing")


def test_edited_manifest(store: Path) -> None:
    target = manifest_files(store)[0]
    target.write_bytes(target.read_bytes().replace(b'"ok"', b'"invalid"', 1))
    report = check(store)
    assert ("altered", str(target.relative_to(store))) in kinds(report)
    assert any("Merkle root" in f.message for f in report.findings)
    newest = manifest_files(store)[-1]  # no entry changed, no manifest after it: only its name tells
    newest.write_bytes(newest.read_bytes().replace(b'"created_at":"2', b'"created_at":"1', 1))
    assert ("altered", str(newest.relative_to(store))) in kinds(check(store))


def test_manifest_removed_from_the_middle_of_the_chain(store: Path) -> None:
    middle = manifest_files(store)[1]
    middle.unlink()
    report = check(store)
    broken = [f for f in report.findings if f.kind == "broken-chain"]
    assert broken and middle.name.split("-")[1][:-5] in broken[0].message
    assert broken[0].path == str(manifest_files(store)[1].relative_to(store))


def test_reordered_list_rehashed_and_renamed(store: Path) -> None:
    """A forger reorders the entries, recomputes the Merkle root and renames the file to its new hash."""
    target = manifest_files(store)[0]
    manifest = json.loads(target.read_bytes())
    manifest["entries"].reverse()
    manifest["merkle_root"] = merkle_root([leaf_hash(e) for e in manifest["entries"]]).hex()
    content = canonical_json(manifest)
    renamed = target.with_name(f"00000001-{hashlib.sha256(content).hexdigest()}.json")
    target.unlink()
    renamed.write_bytes(content)
    report = check(store)
    assert ("altered", str(renamed.relative_to(store))) in kinds(report)
    assert any("not sorted" in f.message for f in report.findings)
    assert any(f.kind == "broken-chain" for f in report.findings)  # the next manifest names the old hash


def test_latest_pointing_at_a_missing_record(store: Path) -> None:
    pointer_path = store / latest_key(RUN_IDS[2])
    reseal(pointer_path, {"sha256": "0" * 64, "record_key": content_key(RUN_IDS[2], "0" * 64)})
    found = kinds(check(store))
    assert ("missing", str(pointer_path.relative_to(store))) in found


def test_latest_rolled_back_to_an_older_outcome(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    asyncio.run(audit(folder, RUN_IDS[:2], flow_run_id="flow-1"))
    pointer_path = folder / latest_key(RUN_IDS[0])
    old_pointer = pointer_path.read_bytes()
    asyncio.run(audit(folder, RUN_IDS[:2], flow_run_id="flow-2", changed=RUN_IDS[0]))
    assert check(folder).clean
    pointer_path.write_bytes(old_pointer)
    found = kinds(check(folder))
    assert ("rolled-back", str(pointer_path.relative_to(folder))) in found


def test_unexpected_and_unreadable_files(store: Path) -> None:
    (store / "parallel-run-inputs" / RUN_IDS[0] / "notes.txt").write_text("hello")
    (store / latest_key(RUN_IDS[1])).write_text("{not json")
    found = kinds(check(store))
    assert ("unexpected", f"parallel-run-inputs/{RUN_IDS[0]}/notes.txt") in found
    assert ("altered", latest_key(RUN_IDS[1])) in found


def test_failure_records_are_covered(tmp_path: Path) -> None:
    from parallel_tasks.errors import NotFoundError

    folder = tmp_path / "store"
    asyncio.run(audit(folder, RUN_IDS[:1], flow_run_id="flow-1"))
    storage = LocalFileSystem(basepath=str(folder))
    failure = build_failure_record(RUN_IDS[0], NotFoundError("gone", status_code=404, run_id=RUN_IDS[0]), base_url="u")

    async def record_failure() -> None:
        stored = await store_record(storage, failure)
        await append_manifest(storage, [stored], chain=CHAIN, flow_run_id="flow-2")

    asyncio.run(record_failure())
    report = check(folder)
    assert report.clean, report.findings


def test_runs_whose_folder_is_not_their_quoted_id_are_matched_to_their_entries(tmp_path: Path) -> None:
    """A run id too long for a folder name is stored under a hash of it, one starting with ``_`` is escaped;
    verify finds each run's entries by its folder, so both verify clean, and a deleted folder is named."""
    folder, long_id = tmp_path / "store", "trun_" + "x" * 300
    storage = LocalFileSystem(basepath=str(folder))
    run_input = TaskRunInput.model_validate(RUNS[RUN_IDS[0]])

    async def record_both() -> None:
        stored = [
            await store_record(storage, build_record(run_id, run_input, check_task_run_input(run_input), base_url="u"))
            for run_id in (long_id, "_underscored")
        ]
        await append_manifest(storage, stored, chain=CHAIN, flow_run_id="flow-1")

    asyncio.run(record_both())
    report = check(folder)
    assert report.clean and report.counts["runs"] == 2, report.findings
    long_folder = Path(latest_key(long_id)).parent
    shutil.rmtree(folder / long_folder)
    assert ("missing", str(long_folder)) in kinds(check(folder))


def test_a_run_whose_record_was_not_stored_is_in_no_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    stored = asyncio.run(audit(folder, RUN_IDS[:2], flow_run_id="flow-1"))
    unstored = build_failure_record(RUN_IDS[2], OSError("disk full"), base_url="u").model_copy(
        update={"status": "not_stored"}
    )
    written = asyncio.run(
        append_manifest(LocalFileSystem(basepath=str(folder)), [*stored, unstored], chain=CHAIN, flow_run_id="flow-2")
    )
    assert written.count == 2
    report = check(folder)
    assert report.clean, report.findings


# --- signatures ---------------------------------------------------------------------------------


def ed25519_pem() -> tuple[str, bytes]:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return pem, private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def test_hmac_signed_chain_checks_with_the_shared_key_only(tmp_path: Path) -> None:
    folder = build_store(tmp_path / "store", ManifestKey.from_secret(HMAC_SECRET))
    assert check(folder, key=ManifestKey.from_secret(HMAC_SECRET)).clean
    report = check(folder, key=ManifestKey.from_secret(HMAC_SECRET + "-other"))
    assert {f.kind for f in report.findings} == {"signature"} and len(report.findings) == 3
    assert HMAC_SECRET not in repr(ManifestKey.from_secret(HMAC_SECRET))


def test_ed25519_signature_checked_with_the_public_key(tmp_path: Path) -> None:
    pem, public = ed25519_pem()
    folder = build_store(tmp_path / "store", ManifestKey.from_secret(pem))
    key_file = tmp_path / "audit.pub"
    key_file.write_bytes(public)
    assert main(["--path", str(folder), "--public-key", str(key_file)]) == 0
    _, other = ed25519_pem()
    assert check(folder, key=ManifestKey.from_public_pem(other)).findings[0].kind == "signature"


def test_wrong_signature_on_a_rehashed_manifest(tmp_path: Path) -> None:
    """A forger edits a signed manifest and renames it: without the key, the signature cannot follow."""
    pem, public = ed25519_pem()
    folder = build_store(tmp_path / "store", ManifestKey.from_secret(pem))
    target = manifest_files(folder)[-1]
    manifest = json.loads(target.read_bytes())
    manifest["entries"][0][1] = "invalid"
    manifest["merkle_root"] = merkle_root([leaf_hash(e) for e in manifest["entries"]]).hex()
    content = canonical_json(manifest)
    forged = target.with_name(f"{target.name[:8]}-{hashlib.sha256(content).hexdigest()}.json")
    target.unlink()
    forged.write_bytes(content)
    found = kinds(check(folder, key=ManifestKey.from_public_pem(public)))
    assert ("signature", str(forged.relative_to(folder))) in found
    stripped = {k: v for k, v in manifest.items() if k != "signature"}
    forged.write_bytes(canonical_json(stripped))
    report = check(folder, key=ManifestKey.from_public_pem(public))
    assert any(f.kind == "signature" and "not signed" in f.message for f in report.findings)


# --- concurrency --------------------------------------------------------------------------------


def slow_storage_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage slow enough that unserialized appends would surely interleave."""
    real_write = manifests._write

    async def slow(storage: Any, key: str, content: bytes) -> None:
        await asyncio.sleep(0.02)
        await real_write(storage, key, content)

    monkeypatch.setattr(manifests, "_write", slow)


def test_concurrent_appends_are_serialized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "store"
    asyncio.run(audit(folder, RUN_IDS, flow_run_id="flow-0"))
    slow_storage_writes(monkeypatch)
    records = [RunInputRecord.model_validate_json((folder / latest_key(r)).read_bytes()) for r in RUN_IDS]

    def append(number: int) -> None:
        storage = LocalFileSystem(basepath=str(folder))
        asyncio.run(append_manifest(storage, records, chain=CHAIN, flow_run_id=f"flow-{number}"))

    threads = [threading.Thread(target=append, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    names = [p.name[:8] for p in manifest_files(folder)]
    assert names == [f"{n:08d}" for n in range(1, 8)]
    report = check(folder)
    assert report.clean and not report.notes, (report.findings, report.notes)


def test_a_fork_is_reported_as_such_and_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage without a lock (S3, say): two appends after the same head make a fork, which verify names."""
    folder = tmp_path / "store"
    asyncio.run(audit(folder, RUN_IDS, flow_run_id="flow-0"))
    monkeypatch.setattr(manifests, "_local_folder", lambda storage: None)  # as for remote storage
    slow_storage_writes(monkeypatch)
    records = [RunInputRecord.model_validate_json((folder / latest_key(r)).read_bytes()) for r in RUN_IDS]
    storage = LocalFileSystem(basepath=str(folder))

    async def both() -> None:
        await asyncio.gather(*(append_manifest(storage, records, chain=CHAIN, flow_run_id=f"flow-{n}") for n in (1, 2)))

    asyncio.run(both())
    report = check(folder)
    assert report.clean, report.findings
    assert [n.kind for n in report.notes] == ["fork"]
    assert report.notes[0].path == str(manifest_files(folder)[0].relative_to(folder))


# --- the command --------------------------------------------------------------------------------


def test_exit_codes_and_plain_output(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--path", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["--path", str(tmp_path / "empty")]) == 2
    assert "could not run" in capsys.readouterr().err
    target = store / latest_key(RUN_IDS[0])
    target.write_bytes(target.read_bytes().replace(b'"status":"ok"', b'"status":"invalid"'))
    assert main(["--path", str(store)]) == 1
    out = capsys.readouterr().out
    assert f"altered       {latest_key(RUN_IDS[0])}: its whole-record hash is" in out
    assert out.rstrip().endswith("findings")


def test_progress_lines_when_not_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from parallel_tasks import verify

    monkeypatch.setattr(verify, "PROGRESS_FROM", 1)
    stream = io.StringIO()
    printer = verify._ProgressPrinter(stream)
    for done in range(1, 21):
        printer(done, 20)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "verified 2/20 runs (10%)" and lines[-1] == "verified 20/20 runs (100%)" and len(lines) == 10


# --- any single byte ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, ManifestKey | None]]:
    """Two stores, one signed and one not: {store folder: the key verify is given}."""
    base = tmp_path_factory.mktemp("pristine")
    stores = {
        build_store(base / "signed", ManifestKey.from_secret(HMAC_SECRET)): ManifestKey.from_secret(HMAC_SECRET),
        build_store(base / "unsigned"): None,
    }
    yield stores
    shutil.rmtree(base, ignore_errors=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_anywhere_is_reported(
    pristine: dict[Path, ManifestKey | None], data: st.DataObject
) -> None:
    folder = data.draw(st.sampled_from(sorted(pristine)), label="store")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 0)
    target = data.draw(st.sampled_from(files), label="file")
    original = target.read_bytes()
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[offset]), label="byte")
    changed = bytearray(original)
    changed[offset] = value
    target.write_bytes(bytes(changed))
    try:
        report = check(folder, key=pristine[folder])
    finally:
        target.write_bytes(original)
    assert not report.clean, (target.relative_to(folder), offset, value)


def test_timestamps_order_the_rollback_check() -> None:
    """started_at never lies after created_at, whatever the records' clocks say."""
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    run_input = TaskRunInput.model_validate(RUNS[RUN_IDS[0]])
    record = build_record(RUN_IDS[0], run_input, check_task_run_input(run_input), base_url="u", fetched_at=later)
    manifest = manifests.build_manifest([record], chain=CHAIN, sequence=1, previous=[], flow_run_id=None)
    assert manifest["started_at"] <= manifest["created_at"]


def test_same_json_in_other_bytes_is_reported(store: Path) -> None:
    """Bytes that parse to the same record (whitespace, escapes, exponent case) are still a change."""
    path = store / latest_key(RUN_IDS[0])
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=1, sort_keys=True))
    assert kinds(check(store)) == {("altered", latest_key(RUN_IDS[0]))}


def test_refetch_reports_drift_against_the_recorded_hash(
    store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from parallel_tasks.emulator import Emulator, run_emulator_server

    emulator = Emulator({run_id: dict(RUNS[run_id]) for run_id in RUN_IDS[1:]}, api_keys=["trail-key-0123456789"])
    with run_emulator_server(emulator) as base_url:
        monkeypatch.setenv("PARALLEL_API_KEY", "trail-key-0123456789")
        monkeypatch.setenv("PARALLEL_BASE_URL", base_url)
        emulator.store.add(RUN_IDS[0], dict(RUNS[RUN_IDS[0]]))
        assert main(["--path", str(store), "--refetch", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["counts"]["refetched"] == len(RUN_IDS)
        emulator.store.add(RUN_IDS[2], {**RUNS[RUN_IDS[2]], "processor": "ultra"})
        assert main(["--path", str(store), "--refetch", "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["kind"], f["path"]) for f in findings] == [("drift", latest_key(RUN_IDS[2]))]
    assert "trail-key-0123456789" not in json.dumps(findings)


def test_remote_storage_through_fsspec() -> None:
    """A RemoteFileSystem block (fsspec: s3://, gcs://, here memory://): written without a lock, verified."""
    from prefect.filesystems import RemoteFileSystem

    from parallel_tasks.verify import FsspecStore

    storage = RemoteFileSystem(basepath="memory://trail-test")

    async def two_audits() -> None:
        for number in (1, 2):
            stored = []
            for run_id in RUN_IDS[:3]:
                run_input = TaskRunInput.model_validate(RUNS[run_id])
                record = build_record(run_id, run_input, check_task_run_input(run_input), base_url="http://api")
                stored.append(await store_record(storage, record))
            await append_manifest(storage, stored, chain=CHAIN, flow_run_id=f"flow-{number}")

    asyncio.run(two_audits())
    remote = FsspecStore(storage.filesystem, storage.basepath)
    report = verify_store(remote)
    assert report.clean and report.counts["manifests"] == 2 and report.counts["runs"] == 3, report.findings
    storage.filesystem.pipe_file(f"memory://trail-test/{latest_key(RUN_IDS[1])}", b"{}")
    assert ("altered", latest_key(RUN_IDS[1])) in kinds(verify_store(remote))


# --- the chain's head ---------------------------------------------------------------------------


class FlakyObjectStore:
    """An object-store block in memory: a missing key raises as S3's client does; reads of ``head.json`` can be
    made to fail as a timed-out request would."""

    class NoSuchKey(Exception):
        pass

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.head_failures = 0

    async def aread_path(self, key: str) -> bytes:
        if key.endswith("/head.json") and self.head_failures:
            self.head_failures -= 1
            raise TimeoutError("read timed out")
        if key not in self.files:
            raise self.NoSuchKey(key)
        return self.files[key]

    async def awrite_path(self, key: str, content: bytes) -> None:
        self.files[key] = content


def test_a_head_that_cannot_be_read_stops_the_manifest_instead_of_forking_the_chain() -> None:
    store = FlakyObjectStore()

    async def append() -> int:
        return (await append_manifest(store, [], chain=CHAIN, flow_run_id=None)).sequence

    assert asyncio.run(append()) == 1  # no head yet: the chain starts
    store.head_failures = 1
    with pytest.raises(RuntimeError, match=r"head of the manifest chain .* could not be read: TimeoutError"):
        asyncio.run(append())
    assert asyncio.run(append()) == 2  # the next audit goes on from the same head: one chain, no second start


def test_a_deleted_head_does_not_start_a_local_chain_again(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    asyncio.run(audit(folder, RUN_IDS[:1], flow_run_id="flow-1"))
    (head,) = folder.rglob("head.json")
    head.unlink()
    manifests_before = sorted(head.parent.glob("*.json"))
    with pytest.raises(RuntimeError, match=r"has manifests but no head\.json"):
        asyncio.run(append_manifest(LocalFileSystem(basepath=str(folder)), [], chain=CHAIN, flow_run_id="flow-2"))
    assert sorted(head.parent.glob("*.json")) == manifests_before


def test_a_missing_key_is_told_apart_from_a_store_that_cannot_be_read() -> None:
    from parallel_tasks.storage import is_missing

    class ClientError(Exception):  # botocore's: the code is in the response
        def __init__(self, code: str) -> None:
            self.response = {"Error": {"Code": code}}

    class NotFound(Exception):  # google.api_core's
        pass

    assert all(map(is_missing, [FileNotFoundError(), NotFound(), ClientError("NoSuchKey"), ClientError("404")]))
    assert not any(map(is_missing, [ClientError("AccessDenied"), TimeoutError(), PermissionError(), KeyError()]))


def test_an_edited_record_relabelled_version_1_is_not_taken_as_unaltered() -> None:
    run_id = RUN_IDS[0]
    run_input = TaskRunInput.model_validate(RUNS[run_id])
    fields = sealed(build_record(run_id, run_input, check_task_run_input(run_input), base_url="http://api"))[0]
    edited = {**fields.model_dump(mode="json"), "base_url": "http://elsewhere", "record_version": 1}
    edited.pop("record_sha256")
    with pytest.raises(ValueError, match="version 1 record"):
        verify_record(canonical_json(edited))
