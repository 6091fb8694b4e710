"""``verify``'s checks of the records: every run folder against its own hashes and the manifests' entries,
then the whole store (:func:`verify_store`), the inclusion proof of one run (:func:`prove`) and the
refetch of every input (:func:`refetch_drift`). Run folders are read one at a time, so memory grows with the
manifests' entries, not with the records.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from parallel_tasks._verify_manifests import Manifest, Report, Store, load_manifests
from parallel_tasks.manifests import (
    MANIFEST_PREFIX,
    ManifestKey,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_inclusion,
)
from parallel_tasks.models import ValidationReport
from parallel_tasks.records import (
    RECORD_PREFIX,
    _path_segment,
    build_record,
    canonical_json,
    content_key,
    latest_key,
    sha256_hex,
    unsealed_json,
)

__all__ = ["Progress", "prove", "refetch_drift", "verify_store"]

_CONTENT_NAME = re.compile(r"^([0-9a-f]{64})\.json$")
_MANIFESTS_DIR = MANIFEST_PREFIX.rsplit("/", 1)[1]


# --- records -------------------------------------------------------------------------------------


@dataclass
class _Content:
    fields: dict[str, Any] | None
    record_sha256: str | None  # computed over the file's fields


def _is_canonical(raw: bytes, body: bytes, fields: dict[str, Any]) -> bool:
    """Whether ``raw`` is the canonical JSON of ``fields``, given ``body``, that of ``fields`` without
    ``record_sha256``. Fast path: put the field back before the top-level ``record_version`` (the key after it;
    if that gives ``raw``, ``raw`` is canonical); otherwise compare with a full canonical dump."""
    position = body.rfind(b',"record_version":')
    if position > 0:
        field = b',"record_sha256":' + json.dumps(fields.get("record_sha256")).encode()
        if body[:position] + field + body[position:] == raw:
            return True
    return canonical_json(fields) == raw


def _check_sealed(raw: bytes, fields: dict[str, Any], path: str, report: Report) -> str:
    """The computed whole-record hash; a finding when it, or the file's form, is not what was sealed."""
    body = unsealed_json(fields)
    computed = sha256_hex(body)  # the record hash, with its bytes kept for the form check
    if fields.get("record_version") == 2:
        if computed != fields.get("record_sha256"):
            recorded = fields.get("record_sha256")
            report.add("altered", path, f"its whole-record hash is {computed}, it records {recorded}")
        elif not _is_canonical(raw, body, fields):
            report.add("altered", path, "not in canonical JSON form")
    elif fields.get("record_version") != 1:
        report.add("altered", path, f"unknown record_version {fields.get('record_version')!r}")
    return computed


def _parse(store: Store, path: str, report: Report) -> tuple[bytes, dict[str, Any]] | None:
    raw = store.read(path)
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        report.add("altered", path, f"not valid JSON ({exc})")
        return None
    if not isinstance(fields, dict):
        report.add("altered", path, "not a JSON object")
        return None
    return raw, fields


def _check_content(store: Store, path: str, digest: str, report: Report) -> _Content:
    parsed = _parse(store, path, report)
    if parsed is None:
        return _Content(None, None)
    raw, fields = parsed
    computed = _check_sealed(raw, fields, path, report)
    report.count("records_v2" if fields.get("record_version") == 2 else "records_v1")
    body = fields.get("input")
    actual = sha256_hex(canonical_json(body)) if isinstance(body, dict) else None
    if actual != digest or fields.get("sha256") != digest:
        recorded = fields.get("sha256")
        report.add("altered", path, f"its input hashes to {actual}, not {digest} (its name; it records {recorded})")
    run_id = fields.get("run_id")
    if not isinstance(run_id, str) or content_key(run_id, digest) != path or fields.get("record_key") != path:
        report.add("altered", path, f"its run_id {run_id!r} or record_key does not match where it is stored")
    return _Content(fields, computed)


@dataclass
class _RunCheck:
    """Everything checked for one run folder, against the manifest entries naming the run."""

    store: Store
    report: Report
    manifests: list[Manifest]
    entries: list[tuple[int, list[Any]]]

    def run(self, folder: str, refetch: list[tuple[str, str]] | None) -> None:
        contents: dict[str, _Content] = {}
        pointer_name = None
        for name, is_dir in sorted(self.store.listdir(folder)):
            path = f"{folder}/{name}"
            match = None if is_dir else _CONTENT_NAME.match(name)
            if match:
                contents[match.group(1)] = _check_content(self.store, path, match.group(1), self.report)
            elif name == "latest.json" and not is_dir:
                pointer_name = path
            elif name.startswith(".") and name.endswith(".partial") and not is_dir:
                self.report.count("partial_files")
            else:
                self.report.add("unexpected", path, "not a record")
        self.report.count("content_records", len(contents))
        listed = self._check_entries(folder, contents)
        for digest, content in contents.items():
            if digest not in listed:
                path = f"{folder}/{digest}.json"
                if content.fields is not None and content.fields.get("record_version") == 1:
                    self.report.count("legacy_unlisted")
                else:
                    self.report.add("orphan", path, "no manifest lists this record")
        if pointer_name is None:
            if self.entries:
                self.report.add("missing", f"{folder}/latest.json", "the run is in a manifest but has no latest.json")
            return
        self._check_pointer(pointer_name, contents, refetch)

    def _check_entries(self, folder: str, contents: dict[str, _Content]) -> set[str]:
        listed = set()
        for index, entry in self.entries:
            digest, content_sha = entry[2], entry[5]
            if digest is None:
                continue
            listed.add(digest)
            manifest = self.manifests[index].key
            content = contents.get(digest)
            if content is None:
                self.report.add("missing", f"{folder}/{digest}.json", f"listed by {manifest}, but gone")
            elif content_sha is not None and content.record_sha256 != content_sha:
                self.report.add(
                    "altered", f"{folder}/{digest}.json", f"its whole-record hash is not the one {manifest} recorded"
                )
        return listed

    def _check_pointer(self, path: str, contents: dict[str, _Content], refetch: list[tuple[str, str]] | None) -> None:
        report = self.report
        report.count("pointers")
        parsed = _parse(self.store, path, report)
        if parsed is None:
            return
        raw, fields = parsed
        computed = _check_sealed(raw, fields, path, report)
        run_id = str(fields.get("run_id"))  # its folder's name may be a hash of it: compare the keys
        if latest_key(run_id) != path:
            report.add("altered", path, f"its run_id {fields.get('run_id')!r} does not match its folder")
        if fields.get("input") is not None:
            report.add("altered", path, "a latest.json holds no input")
        digest, before = fields.get("sha256"), fields.get("previous_sha256")
        for named in (digest, before):
            if named is not None and named not in contents:
                report.add("missing", path, f"points at record {named}.json, which is not there")
        if digest is not None and fields.get("record_key") != content_key(run_id, str(digest)):
            report.add("altered", path, "its record_key is not the key of the record it names")
        shown = contents.get(str(digest or before))
        expected = fields.get("content_record_sha256")
        if expected is not None and shown is not None and shown.record_sha256 != expected:
            report.add("altered", f"{path}", "the record it names has another whole-record hash than it pins")
        self._check_listed(path, fields, computed)
        if refetch is not None and isinstance(digest, str):
            refetch.append((run_id, digest))

    def _check_listed(self, path: str, fields: dict[str, Any], computed: str) -> None:
        """latest.json must be what some manifest recorded, and no later audit may have recorded otherwise."""
        if not self.entries:
            if fields.get("record_version") == 1:
                self.report.count("legacy_unlisted")
            else:
                self.report.add("uncovered", path, "no manifest lists this run")
            return
        matching = [self.manifests[i] for i, entry in self.entries if entry[4] == computed]
        if not matching:
            self.report.add(
                "uncovered",
                path,
                "no manifest recorded this outcome: altered, or written by a run that ended before its manifest",
            )
            return
        written = max(m.created_at for m in matching)
        for index, entry in self.entries:
            later = self.manifests[index]
            if entry[4] not in (None, computed) and later.started_at > written:
                self.report.add(
                    "rolled-back", path, f"{later.key}, started after this outcome was recorded, recorded another"
                )
                return


# --- the whole store -----------------------------------------------------------------------------


def _index(manifests: list[Manifest]) -> dict[str, list[tuple[int, list[Any]]]]:
    """The manifests' entries by the folder of their run."""
    index: dict[str, list[tuple[int, list[Any]]]] = {}
    for number, manifest in enumerate(manifests):
        for entry in manifest.entries:
            if isinstance(entry, list) and entry and isinstance(entry[0], str) and len(entry) >= 6:
                index.setdefault(_path_segment(entry[0]), []).append((number, entry))
    return index


Progress = Callable[[int, int], None]


def verify_store(
    store: Store,
    *,
    key: ManifestKey | None = None,
    expected_manifests: tuple[str, ...] = (),
    progress: Progress | None = None,
    refetch: list[tuple[str, str]] | None = None,
) -> Report:
    """Check every record, pointer and manifest in ``store``; with ``refetch``, collect (run id, sha256)
    of each fetched run for a later refetch.

    Raises:
        FileNotFoundError: There is no record folder in ``store``.
    """
    report = Report(str(store))
    folders = store.listdir(RECORD_PREFIX)
    if not folders:
        raise FileNotFoundError(f"no {RECORD_PREFIX}/ folder (or an empty one) in {store}")
    manifests = load_manifests(store, key, report)
    known = {m.sha256 for m in manifests}
    for sha in expected_manifests:
        if sha not in known:
            report.add("missing", MANIFEST_PREFIX, f"the published manifest {sha} is not in the store")
    index = _index(manifests)
    run_folders = sorted(name for name, is_dir in folders if is_dir and name != _MANIFESTS_DIR)
    for name, is_dir in folders:
        if not is_dir:
            report.add("unexpected", f"{RECORD_PREFIX}/{name}", "a file where run folders belong")
    for done, name in enumerate(run_folders, start=1):
        _RunCheck(store, report, manifests, index.pop(name, [])).run(f"{RECORD_PREFIX}/{name}", refetch)
        if progress is not None:
            progress(done, len(run_folders))
    for name, entries in sorted(index.items()):
        manifest, run_id = manifests[entries[0][0]].key, entries[0][1][0]
        folder = f"{RECORD_PREFIX}/{name}"
        report.add("missing", folder, f"{manifest} lists run {run_id!r}; its folder is gone")
    report.count("runs", len(run_folders))
    return report


async def refetch_drift(pairs: list[tuple[str, str]], credentials: str | None, report: Report) -> None:
    """Fetch each run's input again and hash it as a record would (redacted with the same credentials'
    secrets); a different hash (or a failed fetch) is a finding."""
    from parallel_tasks.credentials import aresolve_credentials

    recorded = dict(pairs)
    resolved = await aresolve_credentials(credentials)
    recording: dict[str, Any] = {"base_url": resolved.base_url, "secrets": resolved.secrets_in_use()}
    async with resolved.get_async_client() as client:
        async for result in client.iter_task_run_inputs(list(recorded), concurrency=16):
            path = latest_key(result.run_id)
            if result.run_input is None:
                report.add("refetch", path, f"could not fetch the input again: {type(result.error).__name__}")
                continue
            again = build_record(result.run_id, result.run_input, ValidationReport(), **recording)
            now = again.sha256
            report.count("refetched")
            if now != recorded[result.run_id]:
                report.add("drift", path, f"the input now hashes to {now}, recorded {recorded[result.run_id]}")


def prove(store: Store, run_id: str, key: ManifestKey | None = None) -> dict[str, Any] | None:
    """The inclusion proof of ``run_id`` in the newest manifest listing it, checked; ``None`` if none does."""
    report = Report(str(store))
    best: tuple[Manifest, int] | None = None
    for manifest in load_manifests(store, key, report):
        ids = [entry[0] for entry in manifest.entries]
        position = bisect.bisect_left(ids, run_id)
        found = position < len(ids) and ids[position] == run_id
        if found and (best is None or manifest.created_at > best[0].created_at):
            best = (manifest, position)
    if best is None:
        return None
    manifest, position = best
    leaves = [leaf_hash(entry) for entry in manifest.entries]
    path = inclusion_proof(leaves, position)
    root = merkle_root(leaves)
    return {
        "run_id": run_id,
        "manifest": manifest.key,
        "manifest_sha256": manifest.sha256,
        "entry": manifest.entries[position],
        "leaf_index": position,
        "tree_size": len(leaves),
        "leaf_hash": leaves[position].hex(),
        "audit_path": [p.hex() for p in path],
        "merkle_root": root.hex(),
        "verified": verify_inclusion(leaves[position], position, len(leaves), path, root),
        "manifest_findings": [asdict(f) for f in report.findings if f.path == manifest.key],
    }
