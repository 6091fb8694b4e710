"""What people read: the summary table's order and columns, the audit report, and the per-run markdown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parallel_tasks import NotFoundError, TaskRunInput
from parallel_tasks.errors import AuthenticationError
from parallel_tasks.ledger import AuditLedger
from parallel_tasks.models import RunInputRecord
from parallel_tasks.publishing import artifact_link
from parallel_tasks.records import build_failure_record, build_record, summarize
from parallel_tasks.rendering import (
    PROBLEMS_LISTED,
    SUMMARY_ROWS_MAX,
    audit_markdown,
    progress_text,
    render_markdown,
)
from parallel_tasks.validation import check_task_run_input

GOOD = {"processor": "core", "input": "What is the GDP of France?", "metadata": {"team": "audit"}}
BAD = {"processor": "base", "input": "x", "metadata": {"a_key_that_is_far_too_long": "v"}}


def fetched(run_id: str, body: dict[str, object], **changes: object) -> RunInputRecord:
    run_input = TaskRunInput.model_validate(body)
    record = build_record(run_id, run_input, check_task_run_input(run_input), base_url="https://api.parallel.ai")
    return record.model_copy(update=changes)


def not_found(run_id: str) -> RunInputRecord:
    error = NotFoundError("Run id not found", status_code=404, run_id=run_id, ref_id="ref-0042")
    return build_failure_record(run_id, error, base_url="https://api.parallel.ai")


def audit_records() -> list[RunInputRecord]:
    return [
        fetched("trun_a1", GOOD),
        fetched("trun_b2", GOOD, drift=True, previous_sha256="f" * 64),
        fetched("trun_c3", BAD),
        not_found("trun_d4"),
        build_failure_record(
            "trun_e5", AuthenticationError("bad key", status_code=401, run_id="trun_e5"), base_url="https://x"
        ),
        build_failure_record("trun_f6", RuntimeError("boom"), base_url="https://x"),
        fetched("trun_g7", GOOD).model_copy(update={"status": "not_stored", "sha256": None, "error": "disk full"}),
    ]


def test_summary_rows_put_problems_first_with_the_short_columns_first() -> None:
    summary = summarize(audit_records())
    assert [(r["run_id"], r["status"]) for r in summary.rows] == [
        ("trun_f6", "failed"),
        ("trun_e5", "unauthorized"),
        ("trun_d4", "not_found"),
        ("trun_g7", "not_stored"),
        ("trun_c3", "invalid"),
        ("trun_b2", "drift"),
        ("trun_a1", "ok"),
    ]
    assert list(summary.rows[0])[:5] == ["run_id", "status", "detail", "processor", "sha256"]
    by_id = {r["run_id"]: r for r in summary.rows}
    assert by_id["trun_d4"]["detail"] == "404 Not Found: Run id not found"  # no class, run id or ref_id: short
    assert by_id["trun_c3"]["detail"] == "metadata.key_too_long" and by_id["trun_c3"]["processor"] == "base"
    assert by_id["trun_b2"]["detail"].startswith("input changed since last recorded (was ffffffffffff)")
    assert len(by_id["trun_a1"]["sha256"]) == 12 and by_id["trun_d4"]["sha256"] == ""
    assert all(value is not None and "None" not in str(value) for row in summary.rows for value in row.values())


def report_of(
    records: list[RunInputRecord], link: Callable[[str], str] | None = None, max_rows: int = SUMMARY_ROWS_MAX
) -> str:
    with AuditLedger.of(records, max_rows) as ledger:
        return audit_markdown(ledger.summary(), ledger, link)


def test_the_report_counts_by_status_and_rule_and_links_each_problem_run() -> None:
    records = audit_records()
    report = report_of(records, artifact_link)
    assert "| not_found | 1 |" in report and "| ok | 1 |" in report and "| drift | 1 |" in report
    assert "| `metadata.key_too_long` | 1 | 1 |" in report
    assert "## Problem runs (6)" in report
    assert "- [trun_d4](/artifacts/key/parallel-run-input-trun-d4) **not_found**: 404 Not Found" in report
    assert report.index("trun_f6") < report.index("trun_d4") < report.index("trun_c3") < report.index("trun_b2")
    assert "trun_a1" not in report and "None" not in report
    unlinked = report_of(records)
    assert "](/artifacts" not in unlinked and "- `trun_d4` **not_found**" in unlinked


def test_past_the_row_cap_the_table_keeps_the_problems_and_the_report_says_what_was_left_out() -> None:
    records = audit_records() + [fetched(f"trun_ok{i}", GOOD) for i in range(3)]
    summary = summarize(records, max_rows=5)
    assert [r["status"] for r in summary.rows] == ["failed", "unauthorized", "not_found", "not_stored", "invalid"]
    assert (
        summary.rows_left_out == 5 and summary.total == 10 and summary.counts["ok"] == 5
    )  # drift is an ok run whose input changed
    report = report_of(records, max_rows=5)
    assert "lists 5 of the 10 runs, problems first; left out: 1 drift, 4 ok." in report
    assert "left out" not in report_of(records)


def test_the_report_names_at_most_the_cap_then_how_many_more() -> None:
    records = [not_found(f"trun_{i:04d}") for i in range(PROBLEMS_LISTED + 7)]
    report = report_of(records, artifact_link)
    assert report.count("**not_found**") == PROBLEMS_LISTED
    assert "- and 7 more (the summary table lists them)" in report


def test_a_failure_artifact_shows_status_error_and_ref_id_and_nothing_empty() -> None:
    markdown = render_markdown(not_found("trun_d4"))
    assert "- **Status:** not_found" in markdown and "- **ref_id:** `ref-0042`" in markdown
    assert "404 Not Found for run 'trun_d4': Run id not found (ref_id ref-0042)" in markdown
    for absent in ("None", "?", "Processor", "SHA-256", "## Input", "No violations"):
        assert absent not in markdown, absent


def test_a_valid_run_says_so_once_and_long_values_can_wrap() -> None:
    record = fetched("trun_a1", GOOD)
    markdown = render_markdown(record)
    assert "- **Status:** ok\n" in markdown and "valid" not in markdown.replace("invalid", "")
    assert "Every rule passed." in markdown and "None" not in markdown
    assert f"\n  `{record.sha256}`\n" in markdown  # the hash on its own line
    folder, _, name = (record.record_key or "").rpartition("/")
    assert f"`{folder}/` `{name}`" in markdown  # a break opportunity between folder and file


def test_an_invalid_run_lists_its_violations_and_a_changed_one_says_from_what() -> None:
    invalid = render_markdown(fetched("trun_c3", BAD))
    assert "- **Status:** invalid\n" in invalid and "| error | `metadata.key_too_long` |" in invalid
    changed = render_markdown(fetched("trun_b2", GOOD, drift=True, previous_sha256="f" * 64))
    assert "(input changed since last recorded)" in changed and f"`{'f' * 64}`" in changed


@pytest.mark.parametrize(
    ("done", "total", "bar"),
    [(0, 13, "░" * 20), (6, 13, "█" * 9 + "░" * 11), (13, 13, "█" * 20), (0, 0, "░" * 20)],
)
def test_the_progress_card_draws_its_bar_in_text(done: int, total: int, bar: str) -> None:
    assert progress_text(done, total) == f"{bar} {done} of {total} runs audited"
