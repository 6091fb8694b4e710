"""Publishing audit records in Prefect: artifacts, events, and the keys they go by.

Asset materializations are made by the task :func:`parallel_tasks.tasks.materialize_run_input_assets`
with :func:`asset_key`. Prefect is imported only when something is published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parallel_tasks.models import RunInputRecord
from parallel_tasks.rendering import metadata_table, render_markdown
from parallel_tasks.storage import store_record

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem

__all__ = ["artifact_key", "asset_key", "event_payload", "publish_record", "record_outcome", "run_context_ids"]

# Characters Prefect refuses in asset keys, plus "~", the escape character itself.
_ASSET_RESTRICTED = frozenset("\n\r\t\0 #?&%\"'<>[]{}|\\^`~")


def artifact_key(run_id: str) -> str:
    """``parallel-run-input-<run id>``, lower-cased with every character outside ``[a-z0-9-]`` as ``-``
    (Prefect artifact keys must match ``^[a-z0-9-]*$``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in run_id.lower())
    return f"parallel-run-input-{cleaned}"


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
