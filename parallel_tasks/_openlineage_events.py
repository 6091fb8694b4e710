"""The pure half of :mod:`parallel_tasks.openlineage`: project records in, OpenLineage JSON (spec 2-0-2) out.
No I/O, no import of the OpenLineage client or of Prefect, so the events can be built and checked anywhere.

Naming (OpenLineage's conventions for a resource behind an API):

* a run input: namespace ``parallel://<host[:port]>`` of the API's base URL (``parallel://api.parallel.ai``),
  name ``tasks/runs/<run id>/input`` (the run id percent-encoded);
* the record storage: ``file`` + its absolute folder for a local filesystem, ``s3://<bucket>`` (``gs://``,
  ...) + the key prefix for a bucket, each ending in ``/parallel-run-inputs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from parallel_tasks._version import __version__
from parallel_tasks.models import RunInputRecord
from parallel_tasks.records import RECORD_PREFIX

__all__ = [
    "CUSTOM_FACET_SCHEMA",
    "CUSTOM_FACET_SCHEMA_URL",
    "FINDINGS_PER_INPUT",
    "INPUTS_PER_EVENT",
    "PRODUCER",
    "RULE_FAMILIES",
    "EventType",
    "error_facet",
    "input_dataset",
    "input_dataset_name",
    "input_dataset_namespace",
    "job_facets",
    "parent_facet",
    "processing_engine_facet",
    "run_event",
    "storage_dataset",
]

EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]

PRODUCER = f"https://pypi.org/project/prefect-parallel-tasks/{__version__}/"
RUN_EVENT_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
CUSTOM_FACET_SCHEMA = Path(__file__).with_name("facets") / "ParallelRunInputDatasetFacet.json"
"""The JSON schema of the ``parallelRunInput`` dataset facet, shipped in the package."""
CUSTOM_FACET_SCHEMA_URL = (
    "urn:prefect-parallel-tasks:spec:facets:1-0-0:ParallelRunInputDatasetFacet.json#/$defs/ParallelRunInputDatasetFacet"
)
_FACETS = "https://openlineage.io/spec/facets/"
_SCHEMAS = {
    "jobType": _FACETS + "2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "processing_engine": _FACETS + "1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "parent": _FACETS + "1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
    "errorMessage": _FACETS + "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
    "version": _FACETS + "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
    "dataQualityAssertions": _FACETS
    + "1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet",
    "outputStatistics": _FACETS
    + "1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
    "parallelRunInput": CUSTOM_FACET_SCHEMA_URL,
}

INPUTS_PER_EVENT = 500
"""Run inputs per RUNNING event: a large audit never builds one giant event."""
FINDINGS_PER_INPUT = 50
"""Validation findings listed one by one per input (each rule family's result is always there)."""
RULE_FAMILIES = (
    "body",
    "processor",
    "metadata",
    "memory_scope_key",
    "source_policy",
    "output_schema",
    "input_schema",
    "input",
)
"""The parts of a run input the validation rules check: the prefix of every rule name (``metadata.key_too_long``)."""
_ERROR_MESSAGE_MAX = 2000


def _facet(kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _SCHEMAS[kind], **fields}


def input_dataset_namespace(base_url: str) -> str:
    """``parallel://<host[:port]>`` of the API a run input came from.

    Example:
        >>> input_dataset_namespace("https://api.parallel.ai"), input_dataset_namespace("http://127.0.0.1:8787/")
        ('parallel://api.parallel.ai', 'parallel://127.0.0.1:8787')
    """
    parts = urlsplit(base_url)
    host = (parts.hostname or "unknown").lower()
    return f"parallel://{host}:{parts.port}" if parts.port else f"parallel://{host}"


def input_dataset_name(run_id: str) -> str:
    """``tasks/runs/<run id>/input``, the run id percent-encoded (so it stays one path segment).

    Example:
        >>> input_dataset_name("trun_ab12"), input_dataset_name("a/b c")
        ('tasks/runs/trun_ab12/input', 'tasks/runs/a%2Fb%20c/input')
    """
    return f"tasks/runs/{quote(run_id, safe='')}/input"


def _assertions(record: RunInputRecord) -> list[dict[str, Any]]:
    """Each rule family's result, then each finding (its rule, JSON path and severity; never its value)."""
    by_family: dict[str, list[Any]] = {family: [] for family in RULE_FAMILIES}
    for violation in record.violations:
        by_family.setdefault(violation.rule.partition(".")[0], []).append(violation)
    assertions = []
    for family, found in by_family.items():
        assertion: dict[str, Any] = {"assertion": family, "success": not found, "actual": str(len(found))}
        if found:
            assertion["severity"] = "error" if any(v.severity == "error" for v in found) else "warn"
        assertions.append(assertion)
    assertions += [
        {
            "assertion": violation.rule,
            "success": False,
            "column": violation.path,
            "severity": "error" if violation.severity == "error" else "warn",
        }
        for violation in record.violations[:FINDINGS_PER_INPUT]
    ]
    return assertions


def input_dataset(record: RunInputRecord) -> dict[str, Any]:
    """The input dataset of one fetched run input: version = its sha256, every rule's result, and the
    ``parallelRunInput`` facet (processor, status, verdict, drift, record key). No input content."""
    custom: dict[str, Any] = {
        "runId": record.run_id,
        "status": record.status,
        "drift": record.drift,
        "errors": sum(v.severity == "error" for v in record.violations),
        "warnings": sum(v.severity == "warning" for v in record.violations),
    }
    optional = {
        "processor": record.processor,
        "verdict": record.verdict,
        "previousSha256": record.previous_sha256,
        "recordKey": record.record_key,
    }
    custom.update({key: value for key, value in optional.items() if value is not None})
    facets: dict[str, Any] = {"parallelRunInput": _facet("parallelRunInput", **custom)}
    if record.sha256:
        facets["version"] = _facet("version", datasetVersion=record.sha256)
    return {
        "namespace": input_dataset_namespace(record.base_url),
        "name": input_dataset_name(record.run_id),
        "facets": facets,
        "inputFacets": {"dataQualityAssertions": _facet("dataQualityAssertions", assertions=_assertions(record))},
    }


def _storage_location(storage: Any) -> tuple[str, str]:
    """(namespace, folder) of a Prefect filesystem block, following OpenLineage's naming for files and buckets."""
    bucket = getattr(storage, "bucket_name", None) or getattr(storage, "bucket", None)
    if isinstance(bucket, str) and bucket:  # prefect-aws S3Bucket, prefect-gcp GcsBucket
        scheme = "s3" if hasattr(storage, "bucket_name") else "gs"
        return f"{scheme}://{bucket}", str(getattr(storage, "bucket_folder", "") or "").strip("/")
    basepath = str(getattr(storage, "basepath", "") or "")
    parts = urlsplit(basepath)
    if parts.scheme and parts.scheme != "file" and len(parts.scheme) > 1:  # RemoteFileSystem: s3://bucket/prefix
        authority = parts.netloc.rpartition("@")[2]  # never the credentials a URL may carry
        return f"{parts.scheme}://{authority}", parts.path.strip("/")
    if hasattr(storage, "basepath"):  # LocalFileSystem
        return "file", str(Path(parts.path if parts.scheme == "file" else basepath or ".").expanduser().absolute())
    return "prefect", type(storage).__name__


def storage_dataset(storage: Any, *, records_written: int = 0) -> dict[str, Any]:
    """The output dataset: the folder ``parallel-run-inputs`` of the record storage (a filesystem block).

    Example:
        >>> from prefect.filesystems import LocalFileSystem
        >>> storage_dataset(LocalFileSystem(basepath="/data/audit"))
        {'namespace': 'file', 'name': '/data/audit/parallel-run-inputs', 'facets': {}}
    """
    namespace, folder = _storage_location(storage)
    name = f"{folder.rstrip('/')}/{RECORD_PREFIX}" if folder and folder != "/" else f"/{RECORD_PREFIX}"
    dataset: dict[str, Any] = {"namespace": namespace, "name": name if namespace == "file" else name.lstrip("/")}
    dataset["facets"] = {}
    if records_written:
        dataset["outputFacets"] = {"outputStatistics": _facet("outputStatistics", rowCount=records_written)}
    return dataset


def job_facets() -> dict[str, Any]:
    """A Prefect flow: a batch job whose events add up (its inputs come spread over RUNNING events)."""
    pattern = {"eventTrigger": "EVENT_BASED", "eventContentMode": "ACCUMULATIVE"}
    return {
        "jobType": _facet(
            "jobType", processingType="BATCH", integration="PREFECT", jobType="FLOW", emissionPattern=pattern
        )
    }


def parent_facet(run_id: str, job_namespace: str, job_name: str) -> dict[str, Any]:
    """The parent run facet: the flow run that started this one (an audit's chunk names its audit)."""
    return _facet("parent", run={"runId": run_id}, job={"namespace": job_namespace, "name": job_name})


def error_facet(message: str) -> dict[str, Any]:
    """The error message facet, the message shortened; no stack trace (it may quote values)."""
    if len(message) > _ERROR_MESSAGE_MAX:
        message = message[: _ERROR_MESSAGE_MAX - 1] + "…"
    return _facet("errorMessage", message=message, programmingLanguage="PYTHON")


def processing_engine_facet(prefect_version: str) -> dict[str, Any]:
    """The processing engine run facet: Prefect, and this package as the adapter."""
    return _facet("processing_engine", version=prefect_version, name="prefect", openlineageAdapterVersion=__version__)


def run_event(
    event_type: EventType,
    *,
    run_id: str,
    job_namespace: str,
    job_name: str,
    inputs: Sequence[Mapping[str, Any]] = (),
    outputs: Sequence[Mapping[str, Any]] = (),
    run_facets: Mapping[str, Any] | None = None,
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """One OpenLineage RunEvent (spec 2-0-2) as JSON."""
    return {
        "eventType": event_type,
        "eventTime": (event_time or datetime.now(timezone.utc)).isoformat(),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA_URL,
        "run": {"runId": run_id, "facets": dict(run_facets or {})},
        "job": {"namespace": job_namespace, "name": job_name, "facets": job_facets()},
        "inputs": [dict(dataset) for dataset in inputs],
        "outputs": [dict(dataset) for dataset in outputs],
    }
