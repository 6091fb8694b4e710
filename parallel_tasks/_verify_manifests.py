"""What ``verify`` reads and what it reports (stores, findings), and its checks of the manifests: each
against its name, its Merkle root, its chain link and (with a key) its signature, then each chain's head.

The records are checked in :mod:`parallel_tasks._verify_records`; the command is :mod:`parallel_tasks.verify`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from parallel_tasks.manifests import (
    HEAD_NAME,
    LOCK_NAME,
    MANIFEST_PREFIX,
    ManifestKey,
    chain_folder,
    leaf_hash,
    merkle_root,
    signed_message,
)
from parallel_tasks.records import canonical_json

__all__ = ["Finding", "FsspecStore", "LocalStore", "Manifest", "Report", "Store", "load_manifests"]

_MANIFEST_NAME = re.compile(r"^(\d{8})-([0-9a-f]{64})\.json$")


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
class Manifest:
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
) -> Manifest | None:
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
    return Manifest(path, actual, str(chain), sequence, previous, created, started, entries)


def _check_head(store: Store, chain_dir: str, chain: dict[str, Manifest], heads: set[str], report: Report) -> None:
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
) -> list[Manifest]:
    manifests = [m for name in sorted(names) if (m := _check_manifest(store, chain_dir, name, key, report))]
    by_sha = {m.sha256: m for m in manifests}
    followers: dict[str, list[Manifest]] = {}
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


def load_manifests(store: Store, key: ManifestKey | None, report: Report) -> list[Manifest]:
    """Every manifest of every chain, checked (findings go to ``report``)."""
    manifests: list[Manifest] = []
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
