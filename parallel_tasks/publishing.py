"""Publishing audit records in Prefect: artifacts, progress, events, and the keys they go by.

Keys (stable; the README lists them): ``parallel-run-input-<run id>`` (one markdown artifact per run),
``parallel-run-input-audit`` (the audit's summary table) and ``parallel-run-input-audit-report`` (its markdown
report, linking each problem run to its artifact). The progress bar of an audit has no key.

Asset materializations are made by the task :func:`parallel_tasks.tasks.materialize_run_input_assets`
with :func:`asset_key`. Prefect is imported only when something is published.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from parallel_tasks.models import AuditSummary, RunInputRecord
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
    from prefect.filesystems import WritableFileSystem

__all__ = [
    "AUDIT_REPORT_KEY",
    "SUMMARY_ARTIFACT_KEY",
    "AuditProgress",
    "artifact_key",
    "artifact_link",
    "asset_key",
    "event_payload",
    "publish_audit",
    "publish_record",
    "record_outcome",
    "run_context_ids",
]

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
    """Emit the record's event and, when asked, its markdown artifact (metadata included)."""
    from prefect.artifacts import acreate_markdown_artifact
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
        render_markdown(record), key=key, description=f"{shown_status(record)}: input of {record.run_id}"
    )


async def record_outcome(storage: WritableFileSystem, record: RunInputRecord, *, artifacts: bool) -> RunInputRecord:
    """Store a record and publish it; returns the record as stored (with drift filled in)."""
    stored = await store_record(storage, record)
    await publish_record(stored, artifacts=artifacts)
    return stored


def publish_audit(summary: AuditSummary, records: Sequence[RunInputRecord], *, per_run_artifacts: bool) -> None:
    """The audit's summary table (problems first) and its markdown report beside it; the report links each
    problem run to its own artifact when the audit made them."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    description = f"Audit of Parallel run inputs: {summary.describe()}"
    create_table_artifact(summary.rows, key=SUMMARY_ARTIFACT_KEY, description=description)
    link = artifact_link if per_run_artifacts else None
    create_markdown_artifact(audit_markdown(summary, records, link), key=AUDIT_REPORT_KEY, description=description)


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
        """``runs`` more runs are done: move the bar."""
        from prefect.artifacts import update_progress_artifact

        self.done = min(self.total, self.done + runs)
        update = cast(Any, update_progress_artifact)
        update(self._id, 100.0 * self.done / max(1, self.total), description=self._description(), _sync=True)

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
