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
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parallel_tasks._verify_manifests import Finding, FsspecStore, LocalStore, Report, Store
from parallel_tasks._verify_records import prove, refetch_drift, verify_store
from parallel_tasks.manifests import ManifestKey

__all__ = [
    "Finding",
    "FsspecStore",
    "LocalStore",
    "Report",
    "add_arguments",
    "main",
    "prove",
    "run",
    "verify_store",
]

PROGRESS_FROM = 1_000  # runs: smaller stores are checked before a progress line would help


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

    from parallel_tasks.storage import resolve_storage

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
