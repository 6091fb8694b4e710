"""OpenLineage events for the fetch and audit flows, so a catalog (Marquez, DataHub, ...) shows which
Parallel run inputs each flow run read, with their hash, rule results and verdict, and where the records went.

Needs the extra: ``pip install 'prefect-parallel-tasks[openlineage]'`` (the OpenLineage project's own
client, ``openlineage-python``, and its transports).

* The builders (:func:`input_dataset`, :func:`storage_dataset`, :func:`run_event`) are pure: project
  records in, OpenLineage JSON out, no I/O and no import of the client.
* :func:`with_openlineage` wraps a flow function: a START event when a run begins, the run inputs it
  read (:func:`add_openlineage_inputs`) in RUNNING events of at most :data:`INPUTS_PER_EVENT`, then
  COMPLETE, FAIL (with the error message facet) or ABORT.
* Off unless the OpenLineage client is configured its own way (``OPENLINEAGE_URL``,
  ``OPENLINEAGE__TRANSPORT__*`` variables, an ``openlineage.yml``); off again with
  ``OPENLINEAGE_DISABLED=true`` or the flow parameter ``openlineage=False``.
* A lineage backend that is down, slow or refusing costs a flow run at most ``PARALLEL_OPENLINEAGE_TIMEOUT``
  seconds (5 by default): events go out from a background thread in order, the first failure drops the
  run's remaining events, and at the end the flow waits for the sender no longer than that, then logs one
  warning and goes on. The HTTP transport's timeout is capped at the same figure and, unless configured,
  it does not retry (a retry there would multiply with nothing here, but it would multiply the wait).

Naming (OpenLineage's conventions for a resource behind an API):

* a run input: namespace ``parallel://<host[:port]>`` of the API's base URL (``parallel://api.parallel.ai``),
  name ``tasks/runs/<run id>/input`` (the run id percent-encoded);
* the record storage: ``file`` + its absolute folder for a local filesystem, ``s3://<bucket>`` (``gs://``,
  ...) + the key prefix for a bucket, each ending in ``/parallel-run-inputs``;
* the job: namespace ``OPENLINEAGE_NAMESPACE`` (``default``), name ``<flow>/<deployment>`` or the flow's name;
  the run id is the Prefect flow run id.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

from parallel_tasks._version import __version__
from parallel_tasks.lineage import RECORD_PREFIX
from parallel_tasks.models import RunInputRecord

__all__ = [
    "CUSTOM_FACET_SCHEMA",
    "CUSTOM_FACET_SCHEMA_URL",
    "INPUTS_PER_EVENT",
    "PRODUCER",
    "TIMEOUT_ENV_VAR",
    "add_openlineage_inputs",
    "input_dataset",
    "input_dataset_name",
    "input_dataset_namespace",
    "is_configured",
    "run_event",
    "storage_dataset",
    "with_openlineage",
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
TIMEOUT_ENV_VAR = "PARALLEL_OPENLINEAGE_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0
_ERROR_MESSAGE_MAX = 2000

_log = logging.getLogger("parallel_tasks.openlineage")


# --- builders: records in, OpenLineage JSON out ---------------------------------------------------


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


# --- configuration ------------------------------------------------------------------------------


def is_configured(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> bool:
    """Whether the OpenLineage client has a configuration of its own (the places it reads, in its order):
    ``OPENLINEAGE_DISABLED=true`` says no; ``OPENLINEAGE_URL``, any ``OPENLINEAGE__TRANSPORT__*`` variable,
    or an ``openlineage.yml`` (``OPENLINEAGE_CONFIG``, the working folder, ``~/.openlineage``) say yes.
    Without one the client would print events to the console: here that means off."""
    env = os.environ if environ is None else environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL") or any(key.startswith("OPENLINEAGE__TRANSPORT") for key in env):
        return True
    files = [env.get("OPENLINEAGE_CONFIG"), (cwd or Path.cwd()) / "openlineage.yml"]
    files.append(Path("~/.openlineage/openlineage.yml").expanduser())
    return any(path and Path(path).is_file() for path in files)


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        _log.warning("%s=%r is not a positive number of seconds; using %g", TIMEOUT_ENV_VAR, raw, DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S
    return value


def _bound_transport(transport: Any, timeout: float) -> None:
    """Cap each HTTP request at the flow's budget; no retries unless configured (the default retries 5 times
    with backoff, which alone can outlast any budget)."""
    from openlineage.client.transport.http import HttpTransport
    from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG

    for each in [transport, *getattr(transport, "transports", [])]:
        if isinstance(each, HttpTransport):
            each.timeout = min(float(each.timeout), timeout)
            if each.config.retry == DEFAULT_RETRY_CONFIG:
                each.config.retry = {**DEFAULT_RETRY_CONFIG, "total": 0}


def _typed(event: Mapping[str, Any]) -> Any:
    """The client's own RunEvent for a JSON event (its filters, tags and transports work on that type)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState

    return RunEvent(
        eventType=RunState(event["eventType"]),
        eventTime=event["eventTime"],
        producer=event["producer"],
        run=Run(runId=event["run"]["runId"], facets=dict(event["run"]["facets"])),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"], facets=dict(event["job"]["facets"])),
        inputs=[
            InputDataset(d["namespace"], d["name"], facets=d.get("facets", {}), inputFacets=d.get("inputFacets", {}))
            for d in event["inputs"]
        ],
        outputs=[
            OutputDataset(d["namespace"], d["name"], facets=d.get("facets", {}), outputFacets=d.get("outputFacets", {}))
            for d in event["outputs"]
        ],
    )


def _describe(error: BaseException) -> str:
    """An emit failure in words, without its text (which may quote the backend's URL and credentials)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status else "")


# --- sending -------------------------------------------------------------------------------------


class _Sender:
    """Sends one flow run's events in order from a daemon thread, so the flow waits only at the end."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queue: queue.SimpleQueue[Mapping[str, Any] | None] = queue.SimpleQueue()
        self._failure: str | None = None
        self._given_up = threading.Event()
        self.produced = self.sent = 0
        self._thread = threading.Thread(target=self._work, name="openlineage-events", daemon=True)
        self._thread.start()

    def send(self, event: Mapping[str, Any]) -> None:
        self.produced += 1
        if self._failure is None and not self._given_up.is_set():
            self._queue.put(event)

    def _work(self) -> None:
        while (event := self._queue.get()) is not None:
            if self._failure is not None or self._given_up.is_set():
                continue  # the backend failed once: drop the rest of this run's events
            try:
                self._client.emit(_typed(event))
                self.sent += 1
            except Exception as error:
                self._failure = _describe(error)
        try:
            self._client.close(0)
        except Exception:  # closing is best effort
            _log.debug("closing the OpenLineage client failed", exc_info=True)

    def finish(self, timeout: float) -> str | None:
        """Wait at most ``timeout`` seconds for the events; what went wrong, or None."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._given_up.set()
            return f"the backend did not take them within {timeout:g} s"
        return self._failure


FinalType = Literal["COMPLETE", "FAIL", "ABORT"]


class LineageRun:
    """The OpenLineage events of one flow run (see :func:`with_openlineage`)."""

    def __init__(
        self,
        sender: _Sender,
        *,
        run_id: str,
        job: tuple[str, str],
        run_facets: dict[str, Any],
        storage: Any,
        timeout: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        inputs_per_event: int = INPUTS_PER_EVENT,
    ) -> None:
        self.run_id, self.job, self.run_facets, self.storage = run_id, job, run_facets, storage
        self._sender, self._timeout, self._logger, self._per_event = sender, timeout, logger, inputs_per_event
        self._pending: list[dict[str, Any]] = []
        self.records_written = 0

    def _event(self, event_type: EventType, inputs: Sequence[Mapping[str, Any]] = (), **facets: Any) -> None:
        self._sender.send(
            run_event(
                event_type,
                run_id=self.run_id,
                job_namespace=self.job[0],
                job_name=self.job[1],
                inputs=inputs,
                outputs=[storage_dataset(self.storage, records_written=self.records_written)],
                run_facets={**self.run_facets, **facets},
            )
        )

    def start(self) -> None:
        self._event("START")

    def add(self, records: Iterable[RunInputRecord]) -> None:
        """The run inputs this flow run read and recorded itself (records made by other flow runs, such as
        an audit's chunks, are theirs to report); full batches go out at once as RUNNING events."""
        for record in records:
            if record.flow_run_id != self.run_id:
                continue
            self.records_written += 1
            if record.sha256:
                self._pending.append(input_dataset(record))
            if len(self._pending) >= self._per_event:
                self._event("RUNNING", self._pending)
                self._pending = []

    def finish(self, event_type: FinalType, error: str | None = None) -> None:
        """Send the final event with the inputs left, wait for the sender within the budget, warn once if
        anything was lost."""
        facets = {"errorMessage": error_facet(error)} if error else {}
        self._event(event_type, self._pending, **facets)
        self._pending = []
        problem = self._sender.finish(self._timeout)
        if problem:
            self._logger.warning(
                "OpenLineage: %d of %d events for this flow run were not sent (%s); the run goes on without them",
                self._sender.produced - self._sender.sent,
                self._sender.produced,
                problem,
            )


_CURRENT: contextvars.ContextVar[LineageRun | None] = contextvars.ContextVar("parallel_openlineage_run", default=None)


def add_openlineage_inputs(records: Iterable[RunInputRecord]) -> None:
    """Report the run inputs the current flow run read; nothing when OpenLineage is off."""
    lineage = _CURRENT.get()
    if lineage is not None:
        try:
            lineage.add(records)
        except Exception:  # lineage never fails an audit
            _log.warning("OpenLineage: could not build the input events", exc_info=True)


def _job_name(client: Any, flow_run: Any) -> str:
    """``<flow>/<deployment>`` for a deployment's run, else the flow's name."""
    flow_name = str(client.read_flow(flow_run.flow_id).name)
    if flow_run.deployment_id is None:
        return flow_name
    return f"{flow_name}/{client.read_deployment(flow_run.deployment_id).name}"


def _prefect_facets(flow_run: Any, namespace: str) -> tuple[str, dict[str, Any]]:
    """The job name and the run facets (processing engine; parent run, for a flow run started by another)."""
    import prefect
    from prefect.client.orchestration import get_client

    facets: dict[str, Any] = {
        "processing_engine": _facet(
            "processing_engine", version=prefect.__version__, name="prefect", openlineageAdapterVersion=__version__
        )
    }
    with get_client(sync_client=True) as client:
        job_name = _job_name(client, flow_run)
        if flow_run.parent_task_run_id is not None:
            parent_id = client.read_task_run(flow_run.parent_task_run_id).flow_run_id
            if parent_id is not None:
                parent_name = _job_name(client, client.read_flow_run(parent_id))
                facets["parent"] = parent_facet(str(parent_id), namespace, parent_name)
    return job_name, facets


def _begin(enabled: bool, storage_block: Any) -> LineageRun | None:
    """A started LineageRun when OpenLineage is on and configured, inside a flow run; else None."""
    if not enabled or not is_configured():
        return None
    from prefect import get_run_logger
    from prefect.context import FlowRunContext
    from prefect.utilities.asyncutils import run_coro_as_sync

    from parallel_tasks.lineage import resolve_storage

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    logger = get_run_logger()
    try:
        from openlineage.client import OpenLineageClient
    except ImportError:
        logger.warning(
            "OpenLineage is configured but its client is missing: pip install 'prefect-parallel-tasks[openlineage]'"
        )
        return None
    try:
        timeout = _timeout()
        client = OpenLineageClient()
        _bound_transport(client.transport, timeout)
        namespace = os.environ.get("OPENLINEAGE_NAMESPACE") or "default"
        job_name, facets = _prefect_facets(context.flow_run, namespace)
        storage = run_coro_as_sync(resolve_storage(storage_block))
        lineage = LineageRun(
            _Sender(client),
            run_id=str(context.flow_run.id),
            job=(namespace, job_name),
            run_facets=facets,
            storage=storage,
            timeout=timeout,
            logger=logger,
            inputs_per_event=INPUTS_PER_EVENT,
        )
        lineage.start()
    except Exception as error:
        logger.warning("OpenLineage: no events for this flow run, its set-up failed (%s)", _describe(error))
        return None
    return lineage


def _final(result: Any) -> tuple[FinalType, str | None]:
    """The final event for what a flow function returned: a State it returns decides."""
    from prefect import State

    if isinstance(result, State):
        if result.is_cancelled():
            return "ABORT", None
        if result.is_failed() or result.is_crashed():
            return "FAIL", result.message or f"the flow run ended {result.name}"
    return "COMPLETE", None


F = TypeVar("F", bound=Callable[..., Any])


def with_openlineage(fn: F) -> F:
    """Wrap a (sync) flow function so each of its runs emits OpenLineage events; put it under ``@flow``.

    The call's ``openlineage`` argument (``False``: no events) and ``storage_block`` argument (where the
    records go: the output dataset) are read when the flow has them. Inside, report the run inputs read
    with :func:`add_openlineage_inputs`. An exception means FAIL, a cancellation (a BaseException
    such as Prefect's termination signal) ABORT, a returned Failed state FAIL, anything else COMPLETE.
    """
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"with_openlineage wraps sync flow functions; {fn.__name__} is async")
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run_with_openlineage(*args: Any, **kwargs: Any) -> Any:
        # Only module-level names in here: a task runner that pickles the flow (Dask) pickles this by value.
        return _run(fn, signature, args, kwargs)

    return run_with_openlineage  # type: ignore[return-value]


def _run(fn: Callable[..., Any], signature: inspect.Signature, args: Any, kwargs: dict[str, Any]) -> Any:
    arguments = signature.bind(*args, **kwargs)
    arguments.apply_defaults()
    lineage = _begin(bool(arguments.arguments.get("openlineage", True)), arguments.arguments.get("storage_block"))
    if lineage is None:
        return fn(*args, **kwargs)
    token = _CURRENT.set(lineage)
    try:
        result = fn(*args, **kwargs)
    except Exception as error:
        _end(lineage, "FAIL", f"{type(error).__name__}: {error}")
        raise
    except BaseException:
        _end(lineage, "ABORT", None)
        raise
    finally:
        _CURRENT.reset(token)
    _end(lineage, *_final(result))
    return result


def _end(lineage: LineageRun, event_type: FinalType, error: str | None) -> None:
    try:
        lineage.finish(event_type, error)
    except Exception as problem:  # lineage never fails a flow run
        lineage._logger.warning("OpenLineage: the final event failed (%s)", _describe(problem))
