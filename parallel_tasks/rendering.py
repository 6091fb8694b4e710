"""What people read: the per-run markdown, the metadata table and the audit's summary rows.

Presentation only: the limits and the preview come from :mod:`parallel_tasks.validation`, the facts from the record.
"""

from __future__ import annotations

from typing import Any

from parallel_tasks.models import RunInputRecord
from parallel_tasks.validation import METADATA_KEY_MAX, METADATA_VALUE_MAX, preview, text_length

__all__ = ["metadata_table", "render_markdown", "summary_row"]


def _cell(value: Any) -> str:
    """Table-cell text for markdown: no pipes or newlines to break the table."""
    return preview(value).replace("|", "\\|").replace("\n", " ")


def metadata_table(record: RunInputRecord) -> list[dict[str, Any]]:
    """One row per metadata entry: key, value preview, their lengths and whether they fit the limits."""
    metadata = (record.input or {}).get("metadata") or {}
    rows = []
    for key, value in metadata.items():
        length = text_length(value)
        rows.append(
            {
                "key": key,
                "value": preview(value),
                "type": type(value).__name__,
                "key_length": len(key),
                "value_length": length,
                "within_limits": 0 < len(key) <= METADATA_KEY_MAX and length <= METADATA_VALUE_MAX,
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
        "detail": preview(record.error or ", ".join(sorted({v.rule for v in record.violations})), 120),
    }
