"""What people read: the per-run markdown, the audit's summary rows (problems first) and its markdown report.

Presentation only: the limits and the preview come from :mod:`parallel_tasks.validation`, the facts from the record.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parallel_tasks.models import AuditSummary, RunInputRecord
from parallel_tasks.validation import METADATA_KEY_MAX, METADATA_VALUE_MAX, preview, text_length

if TYPE_CHECKING:
    from parallel_tasks.ledger import AuditLedger

__all__ = [
    "HASH_PREFIX",
    "PROBLEMS_LISTED",
    "PROBLEM_ORDER",
    "SUMMARY_ROWS_MAX",
    "audit_markdown",
    "metadata_table",
    "problem",
    "progress_text",
    "render_markdown",
    "shown_status",
    "summary_row",
]

PROBLEM_ORDER = ("failed", "unauthorized", "not_found", "not_stored", "invalid", "drift", "ok")
"""How an audit's runs are ordered for people: not fetched, not stored, invalid, changed since last recorded
(``drift``: an ``ok`` run whose input changed), then ok."""

PROBLEMS_LISTED = 50
"""At most this many problem runs are listed by name (in the audit report, in the logs); then a count."""

SUMMARY_ROWS_MAX = 10_000
"""At most this many rows in an audit's summary table, problems first: a larger table is of no use on a page, and
would cost the worker and the server tens of megabytes. The audit's manifest lists every run."""

HASH_PREFIX = 12
"""Characters of the sha256 shown in the summary table; the full hash is in the record."""

_REF_ID = re.compile(r"\(ref_id ([^)\s]+)\)")
_ERROR_CLASS = re.compile(r"^[A-Za-z]+Error: ")


def _cell(value: Any, limit: int = 80) -> str:
    """Table-cell text for markdown, at most ``limit`` characters: no pipes or newlines to break the table."""
    return preview(value, limit).replace("|", "\\|").replace("\n", " ")


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


def progress_text(done: int, total: int, width: int = 20) -> str:
    """A progress bar drawn in text, for the progress artifact's card: Prefect's UI shows that artifact's
    value as a number only, so the card's description carries the bar."""
    filled = width * done // max(1, total)
    return f"{'█' * filled}{'░' * (width - filled)} {done} of {total} runs audited"


def shown_status(record: RunInputRecord) -> str:
    """The status people see: the record's, except ``drift`` for a valid run whose input changed."""
    return "drift" if record.status == "ok" and record.drift else record.status


def problem(record: RunInputRecord) -> str:
    """What is wrong with a run, in one short line: its error (without the error class, the run id and the ref_id,
    which its own artifact shows), the rules it breaks, or that its input changed."""
    if record.error:
        short = _ERROR_CLASS.sub("", _REF_ID.sub("", record.error.replace(f" for run {record.run_id!r}", "")))
        return preview(short.strip(), 100)
    if record.violations:
        return ", ".join(sorted({v.rule for v in record.violations}))
    if record.drift:
        return f"input changed since last recorded (was {(record.previous_sha256 or '')[:HASH_PREFIX]})"
    return ""


def summary_row(record: RunInputRecord) -> dict[str, Any]:
    """One row of an audit's summary table: the short columns people read first, then the counts."""
    return {
        "run_id": record.run_id,
        "status": shown_status(record),
        "detail": problem(record),
        "processor": record.processor or "",
        "sha256": (record.sha256 or "")[:HASH_PREFIX],
        "violations": len(record.violations),
        "errors": sum(v.severity == "error" for v in record.violations),
        "drift": record.drift,
    }


def render_markdown(record: RunInputRecord) -> str:
    """The per-run markdown artifact: for a fetched input its processor, hash, input, metadata and findings;
    for one that could not be fetched the status, the error and the API's ref_id. Nothing reads ``None``."""
    lines = [f"# Run input `{record.run_id}`", ""]
    if record.sha256 is None:
        return "\n".join(lines + _failure_lines(record)) + "\n"
    notes = [record.verdict.replace("_", " ")] if record.verdict not in (None, "valid", record.status) else []
    notes += ["input changed since last recorded"] if record.drift else []
    lines += [
        f"- **Status:** {record.status}" + (f" ({', '.join(notes)})" if notes else ""),
        f"- **Processor:** `{record.processor}`" if record.processor else "- **Processor:** not given",
        f"- **Fetched:** {record.fetched_at:%Y-%m-%d %H:%M:%S} UTC from {record.base_url}",
        "- **SHA-256:**",
        "",
        f"  `{record.sha256}`",
        "",
    ]
    if record.drift and record.previous_sha256:
        lines += ["- **Changed from:**", "", f"  `{record.previous_sha256}`", ""]
    if record.record_key:
        folder, _, name = record.record_key.rpartition("/")
        lines += ["- **Stored at:**", "", f"  `{folder}/` `{name}`", ""]  # the space lets a long path wrap
    lines += ["## Input", "", f"> {_cell(record.input.get('input', '')) if record.input else '_not kept_'}", ""]
    lines += ["## Metadata", ""]
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
    lines += ["", "## Validation", ""]
    if record.violations:
        lines += ["| severity | rule | path | message | value |", "|---|---|---|---|---|"]
        lines += [
            f"| {v.severity} | `{v.rule}` | `{_cell(v.path)}` | {_cell(v.message)} | {_cell(v.preview)} |"
            for v in record.violations
        ]
    else:
        lines.append("Every rule passed.")
    return "\n".join(lines) + "\n"


def _failure_lines(record: RunInputRecord) -> list[str]:
    """Status, error, ref_id, where and when, for a run whose input was not fetched (or not stored)."""
    error = record.error or "no error was recorded"
    ref_id = _REF_ID.search(error)
    lines = [f"- **Status:** {record.status}"]
    if ref_id:
        lines.append(f"- **ref_id:** `{ref_id.group(1)}` (quote it to Parallel's support)")
    lines += [
        f"- **Tried:** {record.fetched_at:%Y-%m-%d %H:%M:%S} UTC at {record.base_url}",
        "",
        "## Error",
        "",
        f"> {_cell(error, 2000)}",
    ]
    return lines


def audit_markdown(summary: AuditSummary, ledger: AuditLedger, link: Callable[[str], str] | None = None) -> str:
    """The audit's report: counts by status, violations by rule, and the problem runs (at most
    :data:`PROBLEMS_LISTED`, then how many more), each linked by ``link(run_id)`` when given."""
    lines = ["# Audit of Parallel run inputs", "", summary.describe(), "", "## Runs by status", ""]
    lines += ["| status | runs |", "|---|---|"]
    shown = ledger.shown
    lines += [f"| {status} | {shown[status]} |" for status in PROBLEM_ORDER if shown[status]]
    rules = ledger.violations_by_rule
    lines += ["", "## Violations by rule", ""]
    if rules:
        lines += ["| rule | violations | runs |", "|---|---|---|"]
        lines += [f"| `{rule}` | {n} | {ledger.runs_by_rule[rule]} |" for rule, n in sorted(rules.items())]
    else:
        lines.append("None.")
    problems = sum(shown[status] for status in PROBLEM_ORDER if status != "ok")
    lines += ["", f"## Problem runs ({problems})", ""]
    for row in ledger.problem_rows():
        name = f"[{row['run_id']}]({link(row['run_id'])})" if link else f"`{row['run_id']}`"
        lines.append(f"- {name} **{row['status']}**: {_cell(row['detail'], 200)}")
    if problems > PROBLEMS_LISTED:
        more = problems - PROBLEMS_LISTED
        listed = "lists them" if problems <= len(summary.rows) else f"lists the first {len(summary.rows):,} runs"
        lines.append(f"- and {more} more (the summary table {listed})")
    if not problems:
        lines.append("None: every run was fetched, valid and unchanged.")
    left_out = shown - Counter(row["status"] for row in summary.rows)
    if left_out:
        statuses = ", ".join(f"{left_out[status]:,} {status}" for status in PROBLEM_ORDER if left_out[status])
        lines += [
            "",
            f"The summary table lists {len(summary.rows):,} of the {ledger.total:,} runs, problems first; left out:"
            f" {statuses}. The audit's manifest lists every run.",
        ]
    return "\n".join(lines) + "\n"
