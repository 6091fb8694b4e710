"""``python -m parallel_tasks verify``: check a record store end to end, as an auditor would.

It trusts no file: every record is checked against its name and its own hashes, every ``latest.json``
against the content record it names and against the manifests, every manifest against its name, its
Merkle root, its chain link and (with a key) its signature. Run folders are read one at a time, so
memory grows with the manifests' entries, not with the records. Exit status: 0 clean, 1 findings,
2 could not run.

    python -m parallel_tasks verify --path ~/.prefect/storage
    python -m parallel_tasks verify --storage-block local-file-system/audit --json
    python -m parallel_tasks verify --path DIR --prove trun_0123...
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from parallel_tasks.lineage import (
    RECORD_PREFIX,
    canonical_json,
    content_key,
    latest_key,
    sha256_hex,
    unsealed_json,
)
from parallel_tasks.manifests import (
    HEAD_NAME,
    LOCK_NAME,
    MANIFEST_PREFIX,
    ManifestKey,
    chain_folder,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    signed_message,
    verify_inclusion,
)

__all__ = ["Finding", "LocalStore", "Report", "main", "prove", "verify_store"]

_MANIFEST_NAME = re.compile(r"^(\d{8})-([0-9a-f]{64})\.json$")
_CONTENT_NAME = re.compile(r"^([0-9a-f]{64})\.json$")
_MANIFESTS_DIR = MANIFEST_PREFIX.rsplit("/", 1)[1]
PROGRESS_FROM = 1_000  # runs: smaller stores are checked before a progress line would help


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or, as a note, worth knowing): its kind, the file, and what is wrong."""

    kind: str
    path: str
    message: str

    def line(self) -> str:
        return f"{self.kind:<13} {self.path}: {self.message}"


@dataclass
class Report:
    """What a verification found; ``findings`` decide the exit status, ``notes`` do not."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.findings

    def add(self, kind: str, path: str, message: str) -> None:
        self.findings.append(Finding(kind, path, message))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "clean": self.clean,
            "counts": self.counts,
            "findings": [asdict(f) for f in self.findings],
            "notes": [asdict(n) for n in self.notes],
        }

    def summary(self) -> str:
        c = self.counts.get
        return (
            f"{c('runs', 0):,} runs, {c('content_records', 0):,} content records ({c('records_v2', 0):,} with a "
            f"whole-record hash, {c('records_v1', 0):,} legacy), {c('pointers', 0):,} latest.json, "
            f"{c('manifests', 0):,} manifests in {c('chains', 0):,} chains: "
            + (f"{len(self.findings):,} findings" if self.findings else "clean")
        )


# --- where the files are -------------------------------------------------------------------------


class Store(Protocol):
    """What verification needs of a storage: list a folder, read a file (keys are ``/``-separated)."""

    def listdir(self, key: str) -> list[tuple[str, bool]]: ...  # (name, is_dir); [] when missing
    def read(self, key: str) -> bytes: ...


class LocalStore:
    """A folder on local disk."""

    def __init__(self, root: str | Path) -> None:
        self.shown = str(root)
        self.root = str(Path(root).expanduser().absolute())  # joined as strings: pathlib costs more than a read

    def __str__(self) -> str:
        return self.shown

    def listdir(self, key: str) -> list[tuple[str, bool]]:
        try:
            with os.scandir(f"{self.root}/{key}") as entries:
                return [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, key: str) -> bytes:
        with open(f"{self.root}/{key}", "rb") as file:
            return file.read()


class FsspecStore:
    """Any fsspec filesystem under a base path (Prefect's ``RemoteFileSystem``: s3://, gcs://, ...)."""

    def __init__(self, filesystem: Any, basepath: str) -> None:
        self.fs, self.base = filesystem, basepath.rstrip("/")

    def __str__(self) -> str:
        return self.base

    def listdir(self, key: str) -> list[tuple[str, bool]]:
        try:
            entries = self.fs.ls(f"{self.base}/{key}", detail=True)
        except FileNotFoundError:
            return []
        return [(str(e["name"]).rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory") for e in entries]

    def read(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.base}/{key}"))


# --- manifests -----------------------------------------------------------------------------------


@dataclass
class _Manifest:
    key: str
    sha256: str
    chain: str
    sequence: int
    previous: list[str]
    created_at: datetime
    started_at: datetime
    entries: list[list[Any]]


def _parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _load_json(raw: bytes) -> Any:
    return json.loads(raw)


def _check_manifest(
    store: Store, chain_dir: str, name: str, key: ManifestKey | None, report: Report
) -> _Manifest | None:
    path = f"{MANIFEST_PREFIX}/{chain_dir}/{name}"
    match = _MANIFEST_NAME.match(name)
    assert match is not None
    raw = store.read(path)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != match.group(2):
        report.add("altered", path, f"its sha256 is {actual}, not the one in its name")
    try:
        manifest = _load_json(raw)
        entries = manifest["entries"]
        fields = (manifest["chain"], int(manifest["sequence"]), list(manifest["previous"]), manifest["merkle_root"])
        created, started = _parse_time(manifest["created_at"]), _parse_time(manifest["started_at"])
    except (ValueError, KeyError, TypeError) as exc:
        report.add("altered", path, f"not a readable manifest ({type(exc).__name__}: {exc})")
        return None
    chain, sequence, previous, root = fields  # (no canonical-form check: its name and link hash the raw bytes)
    if chain_folder(str(chain)) != f"{MANIFEST_PREFIX}/{chain_dir}":
        report.add("altered", path, f"it names chain {chain!r}, not the chain of its folder")
    if sequence != int(match.group(1)):
        report.add("altered", path, f"it says sequence {sequence}, its name {int(match.group(1))}")
    run_ids = [entry[0] for entry in entries]
    if any(a >= b for a, b in itertools.pairwise(run_ids)):
        report.add("altered", path, "its entries are not sorted by run id (or a run id repeats)")
    if manifest.get("count") != len(entries):
        report.add("altered", path, f"it says {manifest.get('count')} entries and holds {len(entries)}")
    computed = merkle_root([leaf_hash(entry) for entry in entries]).hex()
    if computed != root:
        report.add("altered", path, f"its entries give Merkle root {computed}, not the {root} it records")
    if key is not None:
        problem = key.problem(signed_message(manifest), manifest.get("signature"))
        if problem:
            report.add("signature", path, problem)
    elif "signature" in manifest:
        report.count("signatures_unchecked")
    return _Manifest(path, actual, str(chain), sequence, previous, created, started, entries)


def _check_head(store: Store, chain_dir: str, chain: dict[str, _Manifest], heads: set[str], report: Report) -> None:
    path = f"{MANIFEST_PREFIX}/{chain_dir}/{HEAD_NAME}"
    try:
        raw = store.read(path)
        named = chain.get(str(_load_json(raw)["manifest_sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        report.add("head", path, "missing or unreadable")
        return
    if named is None:
        report.add("head", path, "names a manifest which is not in the chain")
    elif named.sha256 not in heads:
        report.add("head", path, f"names manifest {named.key}, which later manifests follow")
    else:
        expected = {"chain": named.chain, "sequence": named.sequence, "manifest_sha256": named.sha256, "key": named.key}
        if raw != canonical_json(expected):
            report.add("head", path, "its chain, sequence or key does not match the manifest it names")


def _check_chain(
    store: Store, chain_dir: str, names: list[str], key: ManifestKey | None, report: Report
) -> list[_Manifest]:
    manifests = [m for name in sorted(names) if (m := _check_manifest(store, chain_dir, name, key, report))]
    by_sha = {m.sha256: m for m in manifests}
    followers: dict[str, list[_Manifest]] = {}
    for manifest in manifests:
        known = [by_sha[p] for p in manifest.previous if p in by_sha]
        for missing in sorted(set(manifest.previous) - set(by_sha)):
            report.add("broken-chain", manifest.key, f"its previous manifest {missing} is missing")
        for parent in known:
            followers.setdefault(parent.sha256, []).append(manifest)
        if len(known) == len(manifest.previous):
            expected = max((p.sequence for p in known), default=0) + 1
            if manifest.sequence != expected:
                report.add("broken-chain", manifest.key, f"sequence {manifest.sequence} after {expected - 1}")
    starts = [m for m in manifests if not m.previous]
    if len(starts) > 1:
        report.add("broken-chain", starts[1].key, f"the chain starts {len(starts)} times: {[m.key for m in starts]}")
    for parent_sha, children in followers.items():
        if len(children) > 1:
            keys = ", ".join(sorted(c.key for c in children))
            report.notes.append(Finding("fork", by_sha[parent_sha].key, f"followed by {len(children)}: {keys}"))
    heads = {m.sha256 for m in manifests if m.sha256 not in followers}
    if manifests:
        _check_head(store, chain_dir, by_sha, heads, report)
    return manifests


def load_manifests(store: Store, key: ManifestKey | None, report: Report) -> list[_Manifest]:
    """Every manifest of every chain, checked (findings go to ``report``)."""
    manifests: list[_Manifest] = []
    for chain_dir, is_dir in sorted(store.listdir(MANIFEST_PREFIX)):
        if not is_dir:
            report.add("unexpected", f"{MANIFEST_PREFIX}/{chain_dir}", "a file where chain folders belong")
            continue
        names = []
        for name, sub_dir in store.listdir(f"{MANIFEST_PREFIX}/{chain_dir}"):
            if not sub_dir and _MANIFEST_NAME.match(name):
                names.append(name)
            elif name not in (HEAD_NAME, LOCK_NAME) and not name.endswith(".partial"):
                report.add("unexpected", f"{MANIFEST_PREFIX}/{chain_dir}/{name}", "not a manifest")
        manifests += _check_chain(store, chain_dir, names, key, report)
        report.count("chains")
    report.count("manifests", len(manifests))
    return manifests


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
        fields = _load_json(raw)
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
    manifests: list[_Manifest]
    entries: list[tuple[int, list[Any]]]

    def run(self, folder: str, run_id: str, refetch: list[tuple[str, str]] | None) -> None:
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
        self._check_pointer(pointer_name, run_id, contents, refetch)

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

    def _check_pointer(
        self, path: str, run_id: str, contents: dict[str, _Content], refetch: list[tuple[str, str]] | None
    ) -> None:
        report = self.report
        report.count("pointers")
        parsed = _parse(self.store, path, report)
        if parsed is None:
            return
        raw, fields = parsed
        computed = _check_sealed(raw, fields, path, report)
        if fields.get("run_id") != run_id or latest_key(str(fields.get("run_id"))) != path:
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


def _index(manifests: list[_Manifest]) -> dict[str, list[tuple[int, list[Any]]]]:
    index: dict[str, list[tuple[int, list[Any]]]] = {}
    for number, manifest in enumerate(manifests):
        for entry in manifest.entries:
            if isinstance(entry, list) and entry and isinstance(entry[0], str) and len(entry) >= 6:
                index.setdefault(entry[0], []).append((number, entry))
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
        run_id = unquote(name)
        _RunCheck(store, report, manifests, index.pop(run_id, [])).run(f"{RECORD_PREFIX}/{name}", run_id, refetch)
        if progress is not None:
            progress(done, len(run_folders))
    for run_id, entries in sorted(index.items()):
        manifest = manifests[entries[0][0]].key
        folder = latest_key(run_id).rsplit("/", 1)[0]
        report.add("missing", folder, f"{manifest} lists run {run_id!r}; its folder is gone")
    report.count("runs", len(run_folders))
    return report


async def refetch_drift(pairs: list[tuple[str, str]], credentials: str | None, report: Report) -> None:
    """Fetch each run's input again; a different hash (or a failed fetch) is a finding."""
    from parallel_tasks.credentials import aresolve_credentials
    from parallel_tasks.lineage import redacted_input

    recorded = dict(pairs)
    resolved = await aresolve_credentials(credentials)
    async with resolved.get_async_client() as client:
        async for result in client.iter_task_run_inputs(list(recorded), concurrency=16):
            path = latest_key(result.run_id)
            if result.run_input is None:
                report.add("refetch", path, f"could not fetch the input again: {type(result.error).__name__}")
                continue
            _, now = redacted_input(result.run_input)
            report.count("refetched")
            if now != recorded[result.run_id]:
                report.add("drift", path, f"the input now hashes to {now}, recorded {recorded[result.run_id]}")


def prove(store: Store, run_id: str, key: ManifestKey | None = None) -> dict[str, Any] | None:
    """The inclusion proof of ``run_id`` in the newest manifest listing it, checked; ``None`` if none does."""
    report = Report(str(store))
    best: tuple[_Manifest, int] | None = None
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


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``verify`` command's options."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--path", type=Path, help="the storage folder (holding parallel-run-inputs/)")
    where.add_argument("--storage-block", metavar="SLUG", help="a filesystem block, e.g. local-file-system/audit")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--prove", metavar="RUN_ID", help="print the inclusion proof of one run and stop")
    parser.add_argument("--refetch", action="store_true", help="fetch every input again and report drift")
    parser.add_argument("--credentials-block", help="for --refetch; PARALLEL_API_KEY when not given")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--signing-key-block", metavar="NAME", help="Secret block with the HMAC or Ed25519 key")
    keys.add_argument("--public-key", type=Path, metavar="PEM", help="Ed25519 public key that signed the manifests")
    parser.add_argument(
        "--expect-manifest", action="append", default=[], metavar="SHA256", help="a published manifest hash"
    )


def _store_of(args: argparse.Namespace) -> Store:
    if args.path is not None:
        if not args.path.is_dir():
            raise FileNotFoundError(f"{args.path} is not a folder")
        return LocalStore(args.path)
    from prefect.filesystems import LocalFileSystem
    from prefect.utilities.asyncutils import run_coro_as_sync

    from parallel_tasks.lineage import resolve_storage

    block: Any = run_coro_as_sync(resolve_storage(args.storage_block))
    if isinstance(block, LocalFileSystem):
        return LocalStore(block.basepath or ".")
    filesystem = getattr(block, "filesystem", None)
    if filesystem is None:
        raise ValueError(f"cannot list files in a {type(block).__name__} block: use a local or fsspec filesystem block")
    return FsspecStore(filesystem, str(getattr(block, "basepath", "")))


def _key_of(args: argparse.Namespace) -> ManifestKey | None:
    if args.public_key is not None:
        return ManifestKey.from_public_pem(args.public_key.read_bytes())
    if args.signing_key_block:
        from prefect.utilities.asyncutils import run_coro_as_sync

        from parallel_tasks.credentials import aload_signing_secret

        text = run_coro_as_sync(aload_signing_secret(args.signing_key_block))
        assert text is not None
        return ManifestKey.from_secret(text)
    return None


@dataclass
class _ProgressPrinter:
    """A bar on a terminal; otherwise a plain line at every tenth."""

    stream: Any
    _bar: Any = None
    _task: Any = None
    _next: int = 10

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        if self.stream.isatty():
            if self._bar is None:
                from rich.progress import Progress as RichProgress

                self._bar = RichProgress(transient=True)
                self._bar.start()
                self._task = self._bar.add_task("verifying runs", total=total)
            self._bar.update(self._task, completed=done)
            return
        percent = 100 * done // total
        if percent >= self._next or done == total:
            print(f"verified {done:,}/{total:,} runs ({percent}%)", file=self.stream, flush=True)
            self._next = percent // 10 * 10 + 10

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _iter_lines(report: Report) -> Iterator[str]:
    for finding in report.findings:
        yield finding.line()
    for note in report.notes:
        yield "note: " + note.line()
    if report.counts.get("legacy_unlisted"):
        yield f"note: {report.counts['legacy_unlisted']:,} legacy records (written before manifests) are in no manifest"
    if report.counts.get("partial_files"):
        yield f"note: {report.counts['partial_files']:,} temporary files of interrupted writes"


def run(args: argparse.Namespace) -> int:
    """Verify (or prove), print, and return the exit status."""
    try:
        store = _store_of(args)
        key = _key_of(args)
        if args.prove:
            proof = prove(store, args.prove, key)
            if proof is None:
                print(f"verify: run {args.prove!r} is in no manifest", file=sys.stderr)
                return 1
            print(json.dumps(proof, indent=2))
            return 0 if proof["verified"] and not proof["manifest_findings"] else 1
        printer = _ProgressPrinter(sys.stderr)
        pairs: list[tuple[str, str]] | None = [] if args.refetch else None
        try:
            expected = tuple(args.expect_manifest)
            report = verify_store(store, key=key, expected_manifests=expected, progress=printer, refetch=pairs)
        finally:
            printer.close()
        if pairs is not None:
            from prefect.utilities.asyncutils import run_coro_as_sync

            run_coro_as_sync(refetch_drift(pairs, args.credentials_block, report))
    except Exception as exc:  # anything that stops the check itself: the auditor must know it did not run
        print(f"verify: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"verify {report.root}")
        for line in _iter_lines(report):
            print(line)
        print(report.summary())
    return 0 if report.clean else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m parallel_tasks verify [options]``."""
    parser = argparse.ArgumentParser(prog="python -m parallel_tasks verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
