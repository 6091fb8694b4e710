"""Publishing audit records in Prefect: artifacts, progress, events, and the keys they go by.

Keys (stable; the README lists them): ``parallel-run-input-<run id>`` (one markdown artifact per run),
``parallel-run-input-audit`` (the audit's summary table) and ``parallel-run-input-audit-report`` (its markdown
report, linking each problem run to its artifact). The progress bar of an audit has no key.

Each audited run is one Prefect event (:func:`run_event`): a fetched input is the asset materialization
``prefect.asset.materialization.succeeded`` of ``parallel://task-runs/<run id>/input`` (:func:`asset_key`), a run
whose input could not be fetched is ``parallel.task-run.input.failed``. An audit posts them a batch at a time
(:class:`EventBatcher`). Prefect is imported only when something is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from parallel_tasks.models import AuditSummary, RunInputRecord
from parallel_tasks.redaction import redact_text
from parallel_tasks.rendering import (
    PROBLEMS_LISTED,
    audit_markdown,
    problem,
    progress_text,
    render_markdown,
    shown_status,
)
from parallel_tasks.storage import store_record

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.filesystems import WritableFileSystem

    from parallel_tasks.ledger import AuditLedger

__all__ = [
    "AUDIT_REPORT_KEY",
    "MATERIALIZED_EVENT",
    "NOT_FETCHED_EVENT",
    "SUMMARY_ARTIFACT_KEY",
    "AuditProgress",
    "EventBatcher",
    "artifact_key",
    "artifact_link",
    "asset_key",
    "audit_events",
    "count_stored_events",
    "event_payload",
    "post_events",
    "publish_audit",
    "publish_record",
    "record_outcome",
    "run_context_ids",
    "run_event",
    "shared_events",
]

MATERIALIZED_EVENT = "prefect.asset.materialization.succeeded"
NOT_FETCHED_EVENT = "parallel.task-run.input.failed"
EVENTS_PER_REQUEST = 200
UNCONFIRMED_REQUESTS = 5
"""Requests whose events an :class:`EventBatcher` may have sent before it sees the first of them stored."""
CONFIRM_TIMEOUT_S = 120.0
CONFIRM_POLL_S = 0.25
SUMMARY_ARTIFACT_KEY = "parallel-run-input-audit"
AUDIT_REPORT_KEY = "parallel-run-input-audit-report"

# Characters Prefect refuses in asset keys, plus "~", the escape character itself.
_ASSET_RESTRICTED = frozenset("\n\r\t\0 #?&%\"'<>[]{}|\\^`~")


def artifact_key(run_id: str) -> str:
    """``parallel-run-input-<run id>``, lower-cased with every character outside ``[a-z0-9-]`` as ``-``
    (Prefect artifact keys must match ``^[a-z0-9-]*$``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in run_id.lower())
    return f"parallel-run-input-{cleaned}"


def artifact_link(run_id: str) -> str:
    """The UI's page of a run's markdown artifact (``/artifacts/key/<key>``, its latest version), relative to the
    UI, as Prefect's markdown renderer opens it."""
    return f"/artifacts/key/{artifact_key(run_id)}"


def asset_key(run_id: str) -> str:
    """``parallel://task-runs/<run_id>/input``; characters Prefect refuses in asset keys become ``~XX``."""
    escaped = "".join(f"~{ord(c):02x}" if c in _ASSET_RESTRICTED or c == "/" else c for c in run_id)
    return f"parallel://task-runs/{escaped}/input"


def event_payload(record: RunInputRecord) -> dict[str, Any]:
    """What each run's event carries: the record's outcome and where it is stored (no input, no secrets)."""
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
        "task_run_id": record.task_run_id,
    }


def run_context_ids() -> tuple[str | None, str | None]:
    """The current Prefect flow-run and task-run ids, when there are any."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    flow_run_id = str(flow_run.id) if flow_run is not None else None
    if task_ctx is not None:
        return str(task_ctx.task_run.flow_run_id or flow_run_id or "") or None, str(task_ctx.task_run.id)
    return flow_run_id, None


def run_event(record: RunInputRecord) -> dict[str, Any]:
    """The one Prefect event of an audited run, as the events API takes it.

    A fetched input (ok, invalid) is the asset materialization of ``parallel://task-runs/<run id>/input``, the
    event Prefect's asset lineage and asset automations read; a run whose input could not be fetched has no
    asset: its event is ``parallel.task-run.input.failed`` on ``parallel.task-run.<run id>``. Either resource
    carries the run id as the label ``parallel.task-run.id``; the payload is :func:`event_payload`.

    The flow run is the only related resource: the server spends about as much on each related resource as on
    the rest of the event (the task run's id is in the payload).
    """
    labels = {"prefect.resource.name": record.run_id, "parallel.task-run.id": record.run_id}
    if record.sha256 is not None:
        name, resource = MATERIALIZED_EVENT, {"prefect.resource.id": asset_key(record.run_id), **labels}
    else:
        name, resource = NOT_FETCHED_EVENT, {"prefect.resource.id": f"parallel.task-run.{record.run_id}", **labels}
    related = []
    if record.flow_run_id:
        related.append(
            {"prefect.resource.id": f"prefect.flow-run.{record.flow_run_id}", "prefect.resource.role": "flow-run"}
        )
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(timezone.utc).isoformat(),
        "event": name,
        "resource": resource,
        "related": related,
        "payload": event_payload(record),
    }


class EventBatcher:
    """Sends events to Prefect's events API (``POST /events``), :data:`EVENTS_PER_REQUEST` a request, one request
    in flight while the audit goes on, and never more than :data:`UNCONFIRMED_REQUESTS` requests ahead of what the
    server has stored.

    Prefect's own events client sends one websocket message per event; a request per batch costs the flow about a
    tenth of the CPU per event (the server's share is the same either way). The server answers as soon as it has
    queued the events; a Prefect server without a message broker (its in-memory one) drops events once 10,000 wait
    for its slowest consumer, so an audit faster than the server's database would lose them silently. Hence the
    pacing: before sending more, the batcher waits until the events of its oldest unconfirmed request are stored
    (at most :data:`CONFIRM_TIMEOUT_S`), and on leaving until all of them are. Events refused by the server (after
    the Prefect client's own bounded retries) or never stored are logged with their count (``lost``); the records
    themselves are already stored.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        self._logger = logger or logging.getLogger(__name__)
        self._pending: list[dict[str, Any]] = []
        self._sending = asyncio.Lock()  # the batches of an audit share one batcher (shared_events)
        self._unconfirmed: list[list[dict[str, Any]]] = []
        self._in_flight: asyncio.Future[None] | None = None
        self._client: PrefectClient | None = None
        self.sent = self.lost = 0

    async def __aenter__(self) -> EventBatcher:
        from prefect.client.orchestration import get_client

        self._client = get_client()
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            while self._pending:
                await self._send_pending()
            await self._wait_in_flight()
            while self._unconfirmed:
                await self._confirm(self._unconfirmed.pop(0))
        finally:
            if self._client is not None:
                await self._client.__aexit__(kind, error, trace)

    async def add(self, event: dict[str, Any]) -> None:
        """Queue one event; a full batch is sent (waiting first for the batch before it, so the queue stays bounded)."""
        self._pending.append(event)
        if len(self._pending) >= EVENTS_PER_REQUEST:
            await self._send_pending()

    async def _wait_in_flight(self) -> None:
        if self._in_flight is not None:
            await self._in_flight
            self._in_flight = None

    async def _send_pending(self) -> None:
        async with self._sending:
            await self._wait_in_flight()
            if self._pending:
                events, self._pending = self._pending[:EVENTS_PER_REQUEST], self._pending[EVENTS_PER_REQUEST:]
                self._in_flight = asyncio.ensure_future(self._post(events))

    async def _post(self, events: list[dict[str, Any]]) -> None:
        assert self._client is not None, "use EventBatcher as an async context manager"
        try:
            await post_events(self._client, events)
        except Exception as error:  # the records are stored; only their events are missing
            self._lose(len(events), _reason(error))
            return
        self.sent += len(events)
        self._unconfirmed.append(events)
        if len(self._unconfirmed) > UNCONFIRMED_REQUESTS:
            await self._confirm(self._unconfirmed.pop(0))

    async def _confirm(self, events: list[dict[str, Any]]) -> None:
        """Wait until the server has stored these events; count the ones it has not after the timeout as lost."""
        assert self._client is not None
        deadline = asyncio.get_running_loop().time() + CONFIRM_TIMEOUT_S
        stored = 0
        try:
            while True:
                stored = await count_stored_events(self._client, events)
                if stored >= len(events) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(CONFIRM_POLL_S)
        except Exception as error:  # cannot tell: not counted as lost, but said
            self._logger.warning("Could not check that %d events were stored: %s", len(events), _reason(error))
            return
        if stored < len(events):
            self._lose(len(events) - stored, f"not stored by the Prefect server within {CONFIRM_TIMEOUT_S:g} s")

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        self._logger.warning("%d events did not reach Prefect: %s", count, reason)


_SHARED: ContextVar[EventBatcher | None] = ContextVar("parallel_tasks_shared_events", default=None)


@contextlib.asynccontextmanager
async def shared_events() -> AsyncIterator[EventBatcher]:
    """One batcher for every batch task of an audit that runs in this event loop: one pacing window and one
    confirmation at the end, where a batcher per batch would hold the batch's slot until the server had stored
    its last events (the next batch waiting behind it) and poll the server once per batch."""
    async with EventBatcher() as events:
        token = _SHARED.set(events)
        try:
            yield events
        finally:
            _SHARED.reset(token)


def audit_events() -> contextlib.AbstractAsyncContextManager[EventBatcher]:
    """The audit's shared batcher when there is one (:func:`shared_events`), else a batcher of one's own."""
    shared = _SHARED.get()
    return contextlib.nullcontext(shared) if shared is not None else EventBatcher()


def _reason(error: BaseException) -> str:
    """An error as a log line may show it (credentials in URLs and ``key=value`` pairs masked)."""
    return redact_text(f"{type(error).__name__}: {error}", ())


async def count_stored_events(client: PrefectClient, events: list[dict[str, Any]]) -> int:
    """How many of these events the Prefect server has stored (found by their ids)."""
    occurred = sorted(event["occurred"] for event in events)
    since = datetime.fromisoformat(occurred[0]) - timedelta(minutes=5)
    until = datetime.fromisoformat(occurred[-1]) + timedelta(days=1)  # the server's clock may be behind ours
    wanted = {
        "id": {"id": [event["id"] for event in events]},
        "occurred": {"since": since.isoformat(), "until": until.isoformat()},
    }
    response = await client.request("POST", "/events/filter", json={"filter": wanted, "limit": 1})
    response.raise_for_status()
    return int(response.json()["total"])


async def post_events(client: PrefectClient, events: list[dict[str, Any]]) -> None:
    """Post events to the Prefect API's ``POST /events``; raises unless the server took them all."""
    response = await client.request("POST", "/events", json=events)
    response.raise_for_status()


async def publish_record(record: RunInputRecord, *, artifacts: bool, events: EventBatcher | None = None) -> None:
    """Send the record's event (through ``events``, else at once) and, when asked, its markdown artifact."""
    if events is not None:
        await events.add(run_event(record))
    else:
        async with EventBatcher() as one:
            await one.add(run_event(record))
    if not artifacts:
        return
    from prefect.artifacts import acreate_markdown_artifact

    key = artifact_key(record.run_id)
    await acreate_markdown_artifact(
        render_markdown(record), key=key, description=f"{shown_status(record)}: input of {record.run_id}"
    )


async def record_outcome(
    storage: WritableFileSystem, record: RunInputRecord, *, artifacts: bool, events: EventBatcher | None = None
) -> RunInputRecord:
    """Store a record and publish it; returns the record as stored (with drift filled in)."""
    stored = await store_record(storage, record)
    await publish_record(stored, artifacts=artifacts, events=events)
    return stored


def publish_audit(summary: AuditSummary, ledger: AuditLedger, *, per_run_artifacts: bool) -> None:
    """The audit's summary table (problems first) and its markdown report beside it; the report links each
    problem run to its own artifact when the audit made them."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    description = f"Audit of Parallel run inputs: {summary.describe()}"
    listed = (
        f"; the table lists {len(summary.rows):,} of the {summary.total:,} runs, problems first"
        if summary.rows_left_out
        else ""
    )
    create_table_artifact(summary.rows, key=SUMMARY_ARTIFACT_KEY, description=description + listed)
    link = artifact_link if per_run_artifacts else None
    create_markdown_artifact(audit_markdown(summary, ledger, link), key=AUDIT_REPORT_KEY, description=description)


class AuditProgress:
    """An audit's progress bar on its run page (a Prefect progress artifact), and its problem runs named in the
    log at WARNING: at most :data:`PROBLEMS_LISTED` lines, then one line with how many more."""

    def __init__(self, total: int, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total, self.done, self._logger = total, 0, logger
        self._named = self._unnamed = 0
        # ``_sync``: the batches call this from inside the flow's event loop, where Prefect would return a coroutine.
        create = cast(Any, create_progress_artifact)
        self._id = create(0.0, description=self._description(), _sync=True)

    def _description(self) -> str:
        return progress_text(self.done, self.total)

    def advance(self, runs: int) -> None:
        """``runs`` more runs are done: move the bar. A bar the server could not move is logged, never raised:
        it must not end an audit whose records are being written."""
        from prefect.artifacts import update_progress_artifact

        self.done = min(self.total, self.done + runs)
        update = cast(Any, update_progress_artifact)
        try:
            update(self._id, 100.0 * self.done / max(1, self.total), description=self._description(), _sync=True)
        except Exception as error:
            self._logger.warning("Could not move the progress bar to %s: %s", self._description(), error)

    def name_problems(self, records: Iterable[RunInputRecord]) -> None:
        """Log each problem run among ``records`` (up to the cap)."""
        for record in records:
            status = shown_status(record)
            if status == "ok":
                continue
            if self._named >= PROBLEMS_LISTED:
                self._unnamed += 1
                continue
            self._named += 1
            self._logger.warning("Run %s is %s: %s", record.run_id, status, problem(record))

    def finish(self) -> None:
        """The count of the problem runs not named, if any."""
        if self._unnamed:
            self._logger.warning(
                "... and %d more problem runs, not named here: see the %s artifact", self._unnamed, SUMMARY_ARTIFACT_KEY
            )
