"""Reading and writing audit records in a Prefect filesystem block.

Result storage by default (the local filesystem), or S3, GCS, ... in production. The content record is
written before the latest pointer, so a crash between the two leaves nothing a rerun does not repair.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from parallel_tasks.models import RunInputRecord
from parallel_tasks.records import content_key, latest_key, record_hash, sealed

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem

__all__ = ["read_latest", "resolve_storage", "store_record"]


async def resolve_storage(storage: WritableFileSystem | str | Path | None = None) -> WritableFileSystem:
    """The storage for records: the given block, block slug (``s3-bucket/audit``) or path, else
    Prefect's default result storage."""
    from prefect.results import aget_default_result_storage, aresolve_result_storage

    if storage is None:
        return await aget_default_result_storage()
    return await aresolve_result_storage(storage)


def _local_folder(storage: Any) -> str | None:
    """The folder of a local filesystem block; None for any other storage (S3, GCS, ...)."""
    if type(storage) is not _local_filesystem():
        return None
    return _absolute(storage.basepath or ".")


@functools.cache
def _local_filesystem() -> type[Any]:
    from prefect.filesystems import LocalFileSystem

    return LocalFileSystem


@functools.lru_cache(maxsize=64)
def _absolute(path: str) -> str:
    """A block's base path as an absolute folder (computed once per path: records are written by the thousand)."""
    return str(Path(path).expanduser().absolute())


async def _read(storage: Any, key: str) -> bytes:
    folder = _local_folder(storage)
    if folder is not None:
        with open(os.path.join(folder, key), "rb") as file:
            return file.read()
    method = getattr(storage, "aread_path", None) or storage.read_path
    result = method(key)
    return bytes(await result if inspect.isawaitable(result) else result)


_MISSING_NAMES = frozenset({"NoSuchKey", "NotFound", "ResourceNotFoundError"})
"""How the object-store blocks name a missing key (S3, Google Cloud Storage, Azure); files raise FileNotFoundError."""


def is_missing(error: BaseException) -> bool:
    """Whether a read failed because the key does not exist, as opposed to a storage that could not be read."""
    if isinstance(error, FileNotFoundError) or type(error).__name__ in _MISSING_NAMES:
        return True
    response = getattr(error, "response", None)  # botocore's ClientError: the code is in its response
    error_info = response.get("Error") if isinstance(response, dict) else None
    return isinstance(error_info, dict) and error_info.get("Code") in ("404", "NoSuchKey")


async def _write(storage: Any, key: str, content: bytes) -> None:
    """Write one object. On the local filesystem, straight from the event loop (a small file costs less
    than a thread hop) and atomically (a temporary file renamed into place), so a crash mid-write never
    leaves a torn record; other blocks write through their own async API."""
    folder = _local_folder(storage)
    if folder is None:
        method = getattr(storage, "awrite_path", None) or storage.write_path
        result = method(key, content)
        if inspect.isawaitable(result):
            await result
        return
    parent, name = os.path.split(os.path.join(folder, key))
    partial = os.path.join(parent, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        _create(partial, content)
    except FileNotFoundError:  # the run's first record: its folder is made once, not checked before every write
        os.makedirs(parent, exist_ok=True)
        _create(partial, content)
    os.replace(partial, os.path.join(parent, name))


async def write_streamed(storage: Any, folder: str, write: Callable[[BinaryIO], str]) -> str:
    """Write an object made piece by piece by ``write(file)``, which returns its key (known only at the end: a
    manifest is named after its own hash). On a local filesystem it goes to a temporary file in ``folder``,
    renamed into place, so it is never whole in memory; other blocks take bytes, read back from a temporary file."""
    local = _local_folder(storage)
    if local is None:
        with tempfile.TemporaryFile() as file:
            key = write(file)
            file.seek(0)
            await _write(storage, key, file.read())
        return key
    parent = os.path.join(local, folder)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".streamed.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "xb") as file:
            key = write(file)
        os.replace(partial, os.path.join(local, key))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    return key


def _create(path: str, content: bytes) -> None:
    with open(path, "xb") as file:
        file.write(content)


async def read_latest(storage: WritableFileSystem, run_id: str) -> RunInputRecord | None:
    """The run's previous outcome, or ``None`` if there is none (or it was left unreadable by a crash)."""
    try:
        return RunInputRecord.model_validate_json(await _read(storage, latest_key(run_id)))
    except Exception:  # a missing key raises differently in every filesystem block
        return None


async def store_record(storage: WritableFileSystem, record: RunInputRecord) -> RunInputRecord:
    """Store a record and return it as stored in ``latest.json`` (sealed, drift filled in), with its input.

    A content record is written only when its hash is new for the run; the latest pointer always,
    naming the content record's whole-record hash (carried over while the input is unchanged).
    """
    previous = await read_latest(storage, record.run_id)
    # A failed audit in between keeps the last hash known, so drift is still seen afterwards.
    previous_sha = (previous.sha256 or previous.previous_sha256) if previous is not None else None
    digest = record.sha256
    drift = digest is not None and previous_sha is not None and previous_sha != digest
    record = record.model_copy(update={"previous_sha256": previous_sha, "drift": drift})
    content_sha = previous.content_record_sha256 if previous is not None else None
    if digest is not None and previous_sha != digest:
        content_sha = await _stored_record_hash(storage, content_key(record.run_id, digest))
        if content_sha is None:  # new for the run (an input that changes back keeps its first record)
            content, data = sealed(record)
            await _write(storage, content_key(record.run_id, digest), data)
            content_sha = content.record_sha256
    pointer, data = sealed(record.model_copy(update={"input": None, "content_record_sha256": content_sha}))
    await _write(storage, latest_key(record.run_id), data)
    return pointer.model_copy(update={"input": record.input})


async def _stored_record_hash(storage: WritableFileSystem, key: str) -> str | None:
    """The whole-record hash of a stored record, or ``None`` if there is none (or it is unreadable)."""
    try:
        fields = json.loads(await _read(storage, key))
    except Exception:  # a missing key raises differently in every filesystem block
        return None
    return record_hash(fields) if isinstance(fields, dict) else None
