"""The audit record of a run input: canonical JSON, its hash, the keys it is stored under, and its outcome.

Records live under keys derived from the run id (see :mod:`parallel_tasks.storage`):

* ``parallel-run-inputs/<run id>/<sha256>.json`` holds the redacted input and its context. It is
  content-addressed: recording the same input again never makes a second copy.
* ``parallel-run-inputs/<run id>/latest.json`` holds the run's latest outcome (ok, invalid,
  not_found, ...), which is how a changed input (drift) is noticed on the next audit.

Each stored record also carries ``record_sha256``, a hash over the whole record (see :func:`record_hash`),
and each audit ends with a manifest of what it stored (:mod:`parallel_tasks.manifests`).

Everything here is pure and tested without Prefect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from parallel_tasks.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from parallel_tasks.ledger import AuditLedger
from parallel_tasks.models import AuditSummary, RecordStatus, RunInputRecord, TaskRunInput, ValidationReport
from parallel_tasks.redaction import Redactor
from parallel_tasks.rendering import SUMMARY_ROWS_MAX

__all__ = [
    "RECORD_PREFIX",
    "build_failure_record",
    "build_record",
    "canonical_json",
    "content_key",
    "latest_key",
    "record_hash",
    "seal",
    "sealed",
    "sha256_hex",
    "status_for_error",
    "summarize",
    "unsealed_json",
    "verify_record",
    "without_input",
]

RECORD_PREFIX = "parallel-run-inputs"


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""One encoder for every record (``json.dumps`` with options builds a new one per call)."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the same data always gives the same bytes.

    Raises:
        ValueError: The data holds NaN or an infinite number (1e400 parses as one), which JSON cannot write.
    """
    try:
        return _CANONICAL.encode(value).encode()
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        raise ValueError("cannot be recorded as canonical JSON: it holds NaN or an infinite number") from None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# Longest folder name most filesystems allow (bytes); a segment this long or shorter is kept as it is.
_MAX_SEGMENT = 255
_HASHED_PREFIX = 128


def _path_segment(run_id: str) -> str:
    """The run id as one path segment: percent-encoded, and never empty, ``.`` or ``..`` (a record of a
    refused run id must not land outside its folder).

    A segment longer than a folder name may be (256 ASCII characters, 100 ``é``) becomes its first 128
    characters, ``%~`` and the SHA-256 of the run id. ``quote`` never writes ``%~``, so such a segment
    cannot be any other run id's; shorter segments are unchanged, so existing stores stay valid.
    """
    segment = quote(run_id, safe="")
    if segment.strip(".") == "":
        segment = "%" + "%2E" * len(segment)
    if segment.startswith("_"):  # names starting with "_" are the store's own (``_manifests``)
        segment = "%5F" + segment[1:]
    if len(segment) <= _MAX_SEGMENT:
        return segment
    prefix = segment[:_HASHED_PREFIX]
    escape = prefix.rfind("%", len(prefix) - 2)  # never cut a %XX escape in two
    if escape != -1:
        prefix = prefix[:escape]
    return f"{prefix}%~{sha256_hex(run_id.encode())}"


def content_key(run_id: str, sha256: str) -> str:
    """Storage key of a run input's content record."""
    return f"{RECORD_PREFIX}/{_path_segment(run_id)}/{sha256}.json"


def latest_key(run_id: str) -> str:
    """Storage key of a run's latest audit outcome."""
    return f"{RECORD_PREFIX}/{_path_segment(run_id)}/latest.json"


def status_for_error(error: BaseException) -> RecordStatus:
    """The audit status for a fetch that failed."""
    if isinstance(error, NotFoundError):
        return "not_found"
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return "unauthorized"
    return "failed"


def _now() -> datetime:
    return datetime.now(timezone.utc)


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
    """The content record of a fetched input: redacted canonical input, its hash, and its context.

    ``secrets`` are the secrets in use (the API key): masked wherever they appear. The findings are
    redacted too, and ``redacted_paths`` lists what was masked; the hash is over the stored input.
    """
    body = run_input.model_dump(mode="json", exclude_unset=True) if isinstance(run_input, TaskRunInput) else run_input
    redactor = Redactor(secrets)
    redacted, paths, removed = redactor.run_input(body)
    report = redactor.report(report, paths, removed)
    digest = sha256_hex(canonical_json(redacted))
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
        redacted_paths=tuple(paths),
        input=redacted,
    )


def build_failure_record(
    run_id: str,
    error: BaseException,
    *,
    base_url: str,
    secrets: Iterable[str] = (),
    flow_run_id: str | None = None,
    task_run_id: str | None = None,
) -> RunInputRecord:
    """The outcome record of a run whose input could not be fetched; its error text is redacted
    (an error may quote a response body)."""
    return RunInputRecord(
        run_id=run_id,
        status=status_for_error(error),
        fetched_at=_now(),
        base_url=base_url,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
        error=Redactor(secrets).text(f"{type(error).__name__}: {error}"),
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
    return sealed(record)[0]


def sealed(record: RunInputRecord) -> tuple[RunInputRecord, bytes]:
    """The record as version 2 with its whole-record hash filled in, and the canonical JSON it is stored as.

    The fields are serialized once, in two halves: those sorting before ``record_sha256`` and those after.
    Canonical JSON is sorted ``"key":value`` pairs, so the bytes the hash covers are the halves joined, and the
    bytes stored are the halves with the hash between them (byte for byte what :func:`canonical_json` of the
    whole would give; the tests compare them).
    """
    fields = record.model_dump(mode="json")
    fields["record_version"] = 2
    fields.pop("record_sha256", None)
    before = canonical_json({key: value for key, value in fields.items() if key < "record_sha256"})
    after = canonical_json({key: value for key, value in fields.items() if key > "record_sha256"})
    digest = sha256_hex(_joined(before, after))
    stored = _joined(before, b'{"record_sha256":' + canonical_json(digest) + b"}", after)
    return record.model_copy(update={"record_version": 2, "record_sha256": digest}), stored


def _joined(*objects: bytes) -> bytes:
    """Canonical JSON objects whose keys follow one another in order, as one object."""
    return b"{" + b",".join(obj[1:-1] for obj in objects if obj != b"{}") + b"}"


_EVERY_FIELD = set(RunInputRecord.model_fields)


def without_input(record: RunInputRecord) -> RunInputRecord:
    """The record as an audit keeps it until its summary: without the input, and sharing one set of field names
    with every other kept record. Pydantic gives each instance its own set of the fields it was given, 0.7 KB, more
    than the record's own values once the input is gone; an audit keeps one record per run."""
    return RunInputRecord.model_construct(_fields_set=_EVERY_FIELD, **{**record.__dict__, "input": None})


def verify_record(data: bytes | str, *, allow_legacy: bool = False) -> RunInputRecord:
    """Parse a stored content record and check its hashes; raises ``ValueError`` if it was altered.

    The whole-record hash and the input's hash. A version 1 record (written before whole-record hashes) can
    prove only its input, so it is refused unless ``allow_legacy``: a record edited, then relabelled version 1
    without its hash, would otherwise pass.
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
    elif not allow_legacy:
        raise ValueError(
            f"record for run {record.run_id!r} is a version 1 record, without a whole-record hash: only its input"
            " can be checked (verify_record(..., allow_legacy=True) accepts that)"
        )
    if record.input is None or record.sha256 is None:
        raise ValueError(f"record for run {record.run_id!r} holds no input to verify")
    actual = sha256_hex(canonical_json(record.input))
    if actual != record.sha256:
        raise ValueError(f"record for run {record.run_id!r} was altered: sha256 {actual} != {record.sha256}")
    return record


def summarize(
    records: Iterable[RunInputRecord],
    *,
    duplicates: int = 0,
    manifest: str | None = None,
    max_rows: int = SUMMARY_ROWS_MAX,
) -> AuditSummary:
    """Counts by status, and one summary row per run (problems first, at most ``max_rows``), over the outcome
    records of an audit (and the sha256 of the manifest it wrote, which its state message and summary artifact
    then show). An audit of many runs tallies them as they come instead: :class:`parallel_tasks.ledger.AuditLedger`."""
    with AuditLedger.of(records, max_rows) as ledger:
        return ledger.summary(duplicates=duplicates, manifest=manifest)
