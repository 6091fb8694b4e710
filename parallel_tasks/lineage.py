"""The audit record of a run input: canonical JSON, its hash, where it is stored, and what Prefect shows.

Records live in a Prefect filesystem block (result storage by default: the local filesystem, or S3,
GCS, ... in production) under keys derived from the run id:

* ``parallel-run-inputs/<run id>/<sha256>.json`` holds the redacted input and its context. It is
  content-addressed: recording the same input again never makes a second copy.
* ``parallel-run-inputs/<run id>/latest.json`` holds the run's latest outcome (ok, invalid,
  not_found, ...), which is how a changed input (drift) is noticed on the next audit.

Each stored record also carries ``record_sha256``, a hash over the whole record (see :func:`record_hash`),
and each audit ends with a manifest of what it stored (:mod:`parallel_tasks.manifests`).

The content record is written before the pointer, so a crash between the two leaves nothing a
rerun does not repair. Everything but the storage calls is pure and tested without Prefect.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from parallel_tasks.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from parallel_tasks.models import AuditSummary, RecordStatus, RunInputRecord, TaskRunInput, ValidationReport
from parallel_tasks.redaction import redact_run_input

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem

__all__ = [
    "RECORD_PREFIX",
    "artifact_key",
    "asset_key",
    "build_failure_record",
    "build_record",
    "canonical_json",
    "content_key",
    "event_payload",
    "latest_key",
    "metadata_table",
    "read_latest",
    "record_hash",
    "redacted_input",
    "render_markdown",
    "resolve_storage",
    "seal",
    "sha256_hex",
    "status_for_error",
    "store_record",
    "summarize",
    "summary_row",
    "unsealed_json",
    "verify_record",
]

RECORD_PREFIX = "parallel-run-inputs"
_PREVIEW = 80
# Characters Prefect refuses in asset keys, plus "~", the escape character itself.
_ASSET_RESTRICTED = frozenset("\n\r\t\0 #?&%\"'<>[]{}|\\^`~")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the same data always gives the same bytes.

    Raises:
        ValueError: The data holds NaN or an infinite number (1e400 parses as one), which JSON cannot write.
    """
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        raise ValueError("cannot be recorded as canonical JSON: it holds NaN or an infinite number") from None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _path_segment(run_id: str) -> str:
    """The run id as one path segment: percent-encoded, and never empty, ``.`` or ``..`` (a record of a
    refused run id must not land outside its folder)."""
    segment = quote(run_id, safe="")
    if segment.strip(".") == "":
        return "%" + "%2E" * len(segment)
    if segment.startswith("_"):  # names starting with "_" are the store's own (``_manifests``)
        return "%5F" + segment[1:]
    return segment


def content_key(run_id: str, sha256: str) -> str:
    """Storage key of a run input's content record."""
    return f"{RECORD_PREFIX}/{_path_segment(run_id)}/{sha256}.json"


def latest_key(run_id: str) -> str:
    """Storage key of a run's latest audit outcome."""
    return f"{RECORD_PREFIX}/{_path_segment(run_id)}/latest.json"


def artifact_key(run_id: str) -> str:
    """``parallel-run-input-<run id>``, lower-cased with every character outside ``[a-z0-9-]`` as ``-``
    (Prefect artifact keys must match ``^[a-z0-9-]*$``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in run_id.lower())
    return f"parallel-run-input-{cleaned}"


def asset_key(run_id: str) -> str:
    """``parallel://task-runs/<run_id>/input``; characters Prefect refuses in asset keys become ``~XX``."""
    escaped = "".join(f"~{ord(c):02x}" if c in _ASSET_RESTRICTED or c == "/" else c for c in run_id)
    return f"parallel://task-runs/{escaped}/input"


def status_for_error(error: BaseException) -> RecordStatus:
    """The audit status for a fetch that failed."""
    if isinstance(error, NotFoundError):
        return "not_found"
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return "unauthorized"
    return "failed"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def redacted_input(
    run_input: TaskRunInput | Mapping[str, Any], secrets: Iterable[str] = ()
) -> tuple[dict[str, Any], str]:
    """The input as it is recorded (redacted) and its sha256, the input's identity."""
    body = run_input.model_dump(mode="json", exclude_unset=True) if isinstance(run_input, TaskRunInput) else run_input
    redacted = redact_run_input(body, secrets)
    return redacted, sha256_hex(canonical_json(redacted))


def build_record(
    run_id: str,
    run_input: TaskRunInput | Mapping[str, Any],
    report: ValidationReport,
    *,
    base_url: str,
    secrets: Iterable[str] = (),
    fetched_at: datetime | None = None,
    flow_run_id: str | None = None,
    task_run_id: str | None = None,
) -> RunInputRecord:
    """The content record of a fetched input: redacted canonical input, its hash, and its context."""
    redacted, digest = redacted_input(run_input, secrets)
    return RunInputRecord(
        run_id=run_id,
        status="ok" if report.valid else "invalid",
        sha256=digest,
        record_key=content_key(run_id, digest),
        fetched_at=fetched_at or _now(),
        base_url=base_url,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
        processor=str(redacted.get("processor", "")),
        verdict=report.verdict,
        violations=report.violations,
        input=redacted,
    )


def build_failure_record(
    run_id: str,
    error: BaseException,
    *,
    base_url: str,
    flow_run_id: str | None = None,
    task_run_id: str | None = None,
) -> RunInputRecord:
    """The outcome record of a run whose input could not be fetched."""
    return RunInputRecord(
        run_id=run_id,
        status=status_for_error(error),
        fetched_at=_now(),
        base_url=base_url,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
        error=f"{type(error).__name__}: {error}",
    )


def unsealed_json(fields: Mapping[str, Any]) -> bytes:
    """What the whole-record hash covers: the canonical JSON of every field but ``record_sha256``.

    It works on the parsed JSON, not the model, so it covers every field a record holds, including
    ones this version of the code does not know.
    """
    return canonical_json({k: v for k, v in fields.items() if k != "record_sha256"})


def record_hash(fields: Mapping[str, Any]) -> str:
    """The whole-record hash: sha256 of :func:`unsealed_json`."""
    return sha256_hex(unsealed_json(fields))


def seal(record: RunInputRecord) -> RunInputRecord:
    """The record as version 2, with its whole-record hash filled in."""
    unsealed = record.model_copy(update={"record_version": 2, "record_sha256": None})
    return unsealed.model_copy(update={"record_sha256": record_hash(unsealed.model_dump(mode="json"))})


def verify_record(data: bytes | str) -> RunInputRecord:
    """Parse a stored content record and check its hashes; raises ``ValueError`` if it was altered.

    The input's hash always; the whole-record hash too when the record has one (version 2).
    """
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("a record must be a JSON object")
    record = RunInputRecord.model_validate(fields)
    if record.record_version >= 2:
        actual = record_hash(fields)
        if actual != fields.get("record_sha256"):
            raise ValueError(
                f"record for run {record.run_id!r} was altered: record_sha256 {actual} != {fields.get('record_sha256')}"
            )
    if record.input is None or record.sha256 is None:
        raise ValueError(f"record for run {record.run_id!r} holds no input to verify")
    actual = sha256_hex(canonical_json(record.input))
    if actual != record.sha256:
        raise ValueError(f"record for run {record.run_id!r} was altered: sha256 {actual} != {record.sha256}")
    return record


# --- storage -------------------------------------------------------------------------------------


async def resolve_storage(storage: WritableFileSystem | str | Path | None = None) -> WritableFileSystem:
    """The storage for records: the given block, block slug (``s3-bucket/audit``) or path, else
    Prefect's default result storage."""
    from prefect.results import aget_default_result_storage, aresolve_result_storage

    if storage is None:
        return await aget_default_result_storage()
    return await aresolve_result_storage(storage)


def _local_folder(storage: Any) -> Path | None:
    """The folder of a local filesystem block; None for any other storage (S3, GCS, ...)."""
    from prefect.filesystems import LocalFileSystem

    if type(storage) is not LocalFileSystem:
        return None
    return Path(storage.basepath or ".").expanduser().absolute()


async def _read(storage: Any, key: str) -> bytes:
    folder = _local_folder(storage)
    if folder is not None:
        return (folder / key).read_bytes()
    method = getattr(storage, "aread_path", None) or storage.read_path
    result = method(key)
    return bytes(await result if inspect.isawaitable(result) else result)


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
    target = folder / key
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    partial.write_bytes(content)
    os.replace(partial, target)


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
    content_sha = previous.content_record_sha256 if previous is not None else None
    digest = record.sha256
    drift = digest is not None and previous_sha is not None and previous_sha != digest
    record = record.model_copy(update={"previous_sha256": previous_sha, "drift": drift})
    if digest is not None and previous_sha != digest:
        content_sha = await _stored_record_hash(storage, content_key(record.run_id, digest))
        if content_sha is None:  # new for the run (an input that changes back keeps its first record)
            content = seal(record)
            await _write(storage, content_key(record.run_id, digest), _dump(content))
            content_sha = content.record_sha256
    pointer = seal(record.model_copy(update={"input": None, "content_record_sha256": content_sha}))
    await _write(storage, latest_key(record.run_id), _dump(pointer))
    return pointer.model_copy(update={"input": record.input})


async def _stored_record_hash(storage: WritableFileSystem, key: str) -> str | None:
    """The whole-record hash of a stored record, or ``None`` if there is none (or it is unreadable)."""
    try:
        fields = json.loads(await _read(storage, key))
    except Exception:  # a missing key raises differently in every filesystem block
        return None
    return record_hash(fields) if isinstance(fields, dict) else None


def _dump(record: RunInputRecord) -> bytes:
    return canonical_json(record.model_dump(mode="json"))


# --- what the Prefect UI shows -------------------------------------------------------------------


def _preview(value: Any, limit: int = _PREVIEW) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(value: Any) -> str:
    """Table-cell text for markdown: no pipes or newlines to break the table."""
    return _preview(value).replace("|", "\\|").replace("\n", " ")


def metadata_table(record: RunInputRecord) -> list[dict[str, Any]]:
    """One row per metadata entry: key, value preview, their lengths and whether they fit the limits."""
    metadata = (record.input or {}).get("metadata") or {}
    rows = []
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        rows.append(
            {
                "key": key,
                "value": _preview(value),
                "type": type(value).__name__,
                "key_length": len(key),
                "value_length": len(text),
                "within_limits": 0 < len(key) <= 16 and len(text) <= 512,
            }
        )
    return rows


def render_markdown(record: RunInputRecord) -> str:
    """The per-run markdown artifact: processor, input preview, metadata, verdict and violations, hash."""
    body = record.input or {}
    lines = [
        f"# Run input `{record.run_id}`",
        "",
        f"- **Status:** {record.status} ({record.verdict or 'not validated'})",
        f"- **Processor:** `{record.processor or '?'}`",
        f"- **SHA-256:** `{record.sha256}`" + (f" (changed from `{record.previous_sha256}`)" if record.drift else ""),
        f"- **Fetched at:** {record.fetched_at.isoformat()} from {record.base_url}",
        f"- **Stored at:** `{record.record_key}`",
        "",
        "## Input",
        "",
        f"> {_cell(body.get('input', ''))}",
        "",
        "## Metadata",
        "",
    ]
    rows = metadata_table(record)
    if rows:
        lines += ["| key | value | key length | value length | within limits |", "|---|---|---|---|---|"]
        lines += [
            f"| {_cell(r['key'])} | {_cell(r['value'])} | {r['key_length']} | {r['value_length']} | "
            f"{'yes' if r['within_limits'] else '**no**'} |"
            for r in rows
        ]
    else:
        lines.append("_none_")
    lines += ["", f"## Validation: {record.verdict}", ""]
    if record.violations:
        lines += ["| severity | rule | path | message | value |", "|---|---|---|---|---|"]
        lines += [
            f"| {v.severity} | `{v.rule}` | `{_cell(v.path)}` | {_cell(v.message)} | {_cell(v.preview)} |"
            for v in record.violations
        ]
    else:
        lines.append("No violations.")
    return "\n".join(lines) + "\n"


def summary_row(record: RunInputRecord) -> dict[str, Any]:
    """One row of an audit's summary table."""
    return {
        "run_id": record.run_id,
        "status": record.status,
        "violations": len(record.violations),
        "errors": sum(v.severity == "error" for v in record.violations),
        "sha256": record.sha256 or "",
        "drift": record.drift,
        "detail": _preview(record.error or ", ".join(sorted({v.rule for v in record.violations})), 120),
    }


def summarize(records: Iterable[RunInputRecord], *, duplicates: int = 0, manifest: str | None = None) -> AuditSummary:
    """Counts by status, and one summary row per run, over the outcome records of an audit (and the
    sha256 of the manifest it wrote, which its state message and summary artifact then show)."""
    ordered = sorted(records, key=lambda r: r.run_id)
    counts = dict.fromkeys(("ok", "invalid", "not_found", "unauthorized", "failed"), 0)
    for record in ordered:
        counts[record.status] += 1
    return AuditSummary(
        total=len(ordered),
        counts=counts,
        drifted=sum(r.drift for r in ordered),
        duplicates=duplicates,
        rows=[summary_row(r) for r in ordered],
        manifest_sha256=manifest,
    )


def event_payload(record: RunInputRecord) -> dict[str, Any]:
    """What the ``parallel.task-run.input.*`` events carry: no input, no secrets."""
    return {
        "run_id": record.run_id,
        "status": record.status,
        "sha256": record.sha256,
        "previous_sha256": record.previous_sha256,
        "drift": record.drift,
        "processor": record.processor,
        "verdict": record.verdict,
        "violations": len(record.violations),
        "record_key": record.record_key,
        "base_url": record.base_url,
        "error": record.error,
    }


# --- publishing in Prefect -----------------------------------------------------------------------


def run_context_ids() -> tuple[str | None, str | None]:
    """The current Prefect flow-run and task-run ids, when there are any."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    flow_run_id = str(flow_run.id) if flow_run is not None else None
    if task_ctx is not None:
        return str(task_ctx.task_run.flow_run_id or flow_run_id or "") or None, str(task_ctx.task_run.id)
    return flow_run_id, None


def _related(record: RunInputRecord) -> list[dict[str, str]]:
    pairs = [
        (asset_key(record.run_id) if record.sha256 else None, "asset"),
        (f"prefect.flow-run.{record.flow_run_id}" if record.flow_run_id else None, "flow-run"),
        (f"prefect.task-run.{record.task_run_id}" if record.task_run_id else None, "task-run"),
    ]
    return [{"prefect.resource.id": rid, "prefect.resource.role": role} for rid, role in pairs if rid]


async def publish_record(record: RunInputRecord, *, artifacts: bool) -> None:
    """Emit the record's event and, when asked, its markdown and metadata-table artifacts."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
    from prefect.events import emit_event

    emit_event(
        event="parallel.task-run.input.recorded" if record.sha256 else "parallel.task-run.input.failed",
        resource={"prefect.resource.id": f"parallel.task-run.{record.run_id}", "prefect.resource.name": record.run_id},
        related=_related(record),
        payload=event_payload(record),
    )
    if not artifacts:
        return
    key = artifact_key(record.run_id)
    await acreate_markdown_artifact(
        render_markdown(record), key=key, description=f"Input of Parallel task run {record.run_id}: {record.status}"
    )
    rows = metadata_table(record)
    if rows:
        await acreate_table_artifact(rows, key=f"{key}-metadata", description=f"Metadata of {record.run_id}")


async def record_outcome(storage: WritableFileSystem, record: RunInputRecord, *, artifacts: bool) -> RunInputRecord:
    """Store a record and publish it; returns the record as stored (with drift filled in)."""
    stored = await store_record(storage, record)
    await publish_record(stored, artifacts=artifacts)
    return stored
