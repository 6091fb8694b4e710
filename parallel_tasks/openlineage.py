"""OpenLineage events for the fetch and audit flows, so a catalog (Marquez, DataHub, ...) shows which
Parallel run inputs each flow run read, with their hash, rule results and verdict, and where the records went.

Needs the extra: ``pip install 'prefect-parallel-tasks[openlineage]'`` (the OpenLineage project's own
client, ``openlineage-python``, and its transports).

* The builders (:func:`input_dataset`, :func:`storage_dataset`, :func:`run_event`; they live in
  ``_openlineage_events`` and are re-exported here) are pure: project records in, OpenLineage JSON out,
  no I/O and no import of the client.
* :func:`with_openlineage` wraps a flow function: a START event when a run begins, the run inputs it
  read (:func:`add_openlineage_inputs`) in RUNNING events of at most :data:`INPUTS_PER_EVENT`, then
  COMPLETE, FAIL (with the error message facet) or ABORT.
* Off unless the OpenLineage client is configured its own way (``OPENLINEAGE_URL``,
  ``OPENLINEAGE__TRANSPORT__*`` variables, an ``openlineage.yml``); off again with
  ``OPENLINEAGE_DISABLED=true`` or the flow parameter ``openlineage=False``.
* A lineage backend that is down, slow or refusing costs a flow run at most ``PARALLEL_OPENLINEAGE_TIMEOUT``
  seconds (5 by default; the settings' ``openlineage_timeout``): events go out from a background thread in
  order, the first failure drops the run's remaining events, and at the end the flow waits for the sender
  no longer than that, then logs one warning and goes on. The HTTP transport's timeout is capped at the
  same figure and, unless configured, it does not retry (a retry there would multiply with nothing here,
  but it would multiply the wait).

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
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from parallel_tasks._openlineage_events import (
    CUSTOM_FACET_SCHEMA,
    CUSTOM_FACET_SCHEMA_URL,
    FINDINGS_PER_INPUT,
    INPUTS_PER_EVENT,
    PRODUCER,
    RULE_FAMILIES,
    EventType,
    error_facet,
    input_dataset,
    input_dataset_name,
    input_dataset_namespace,
    job_facets,
    parent_facet,
    processing_engine_facet,
    run_event,
    storage_dataset,
)
from parallel_tasks.models import RunInputRecord
from parallel_tasks.settings import OPENLINEAGE_TIMEOUT_ENV_VAR, get_settings, openlineage_environment

__all__ = [
    "CUSTOM_FACET_SCHEMA",
    "CUSTOM_FACET_SCHEMA_URL",
    "FINDINGS_PER_INPUT",
    "INPUTS_PER_EVENT",
    "PRODUCER",
    "RULE_FAMILIES",
    "TIMEOUT_ENV_VAR",
    "LineageRun",
    "add_openlineage_inputs",
    "error_facet",
    "input_dataset",
    "input_dataset_name",
    "input_dataset_namespace",
    "is_configured",
    "job_facets",
    "parent_facet",
    "run_event",
    "storage_dataset",
    "with_openlineage",
]

TIMEOUT_ENV_VAR = OPENLINEAGE_TIMEOUT_ENV_VAR
"""``PARALLEL_OPENLINEAGE_TIMEOUT``, read as the settings' ``openlineage_timeout``."""

_log = logging.getLogger("parallel_tasks.openlineage")


# --- configuration ------------------------------------------------------------------------------


def is_configured(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> bool:
    """Whether the OpenLineage client has a configuration of its own (the places it reads, in its order):
    ``OPENLINEAGE_DISABLED=true`` says no; ``OPENLINEAGE_URL``, any ``OPENLINEAGE__TRANSPORT__*`` variable,
    or an ``openlineage.yml`` (``OPENLINEAGE_CONFIG``, the working folder, ``~/.openlineage``) say yes.
    Without one the client would print events to the console: here that means off."""
    env = openlineage_environment() if environ is None else environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL") or any(key.startswith("OPENLINEAGE__TRANSPORT") for key in env):
        return True
    files = [env.get("OPENLINEAGE_CONFIG"), (cwd or Path.cwd()) / "openlineage.yml"]
    files.append(Path("~/.openlineage/openlineage.yml").expanduser())
    return any(path and Path(path).is_file() for path in files)


def _timeout() -> float:
    """The budget, from the settings (``PARALLEL_OPENLINEAGE_TIMEOUT``: above 0 and finite, else a ValueError
    naming it, like every other setting)."""
    return get_settings().openlineage_timeout


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

    facets: dict[str, Any] = {"processing_engine": processing_engine_facet(prefect.__version__)}
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

    from parallel_tasks.storage import resolve_storage

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
        namespace = openlineage_environment().get("OPENLINEAGE_NAMESPACE") or "default"
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
