"""The audit record of a run input, by its old name: records, storage, rendering and publishing in one import.

Kept for compatibility (``from parallel_tasks.lineage import verify_record`` keeps working); the code lives in
:mod:`parallel_tasks.records` (building, canonical JSON, hashes), :mod:`parallel_tasks.storage` (reading and
writing the store), :mod:`parallel_tasks.rendering` (markdown and tables) and :mod:`parallel_tasks.publishing`
(artifacts, events, asset keys).
"""

from __future__ import annotations

from parallel_tasks.publishing import (
    artifact_key,
    asset_key,
    event_payload,
    publish_record,
    record_outcome,
    run_context_ids,
)
from parallel_tasks.records import (
    RECORD_PREFIX,
    build_failure_record,
    build_record,
    canonical_json,
    content_key,
    latest_key,
    record_hash,
    seal,
    sha256_hex,
    status_for_error,
    summarize,
    unsealed_json,
    verify_record,
)
from parallel_tasks.rendering import metadata_table, render_markdown, summary_row
from parallel_tasks.storage import read_latest, resolve_storage, store_record

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
    "publish_record",
    "read_latest",
    "record_hash",
    "record_outcome",
    "render_markdown",
    "resolve_storage",
    "run_context_ids",
    "seal",
    "sha256_hex",
    "status_for_error",
    "store_record",
    "summarize",
    "summary_row",
    "unsealed_json",
    "verify_record",
]
