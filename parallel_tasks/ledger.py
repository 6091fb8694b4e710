"""An audit's outcome, tallied as its batches finish, in memory that does not grow with its runs.

The audit flow keeps no record per run: each batch's records are tallied (counts by status, violations by
rule, the first rows of the summary table in problem order) and their manifest entries go to a temporary
SQLite file, read back sorted by run id when the manifest is written. So an audit of a million runs holds
what one of ten thousand holds, plus the run ids themselves.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, get_args

from parallel_tasks.models import AuditSummary, RecordStatus, RunInputRecord
from parallel_tasks.rendering import PROBLEM_ORDER, PROBLEMS_LISTED, SUMMARY_ROWS_MAX, shown_status, summary_row

__all__ = ["ENTRY_FIELDS", "STATUSES", "AuditLedger", "manifest_entry"]

ENTRY_FIELDS = ("run_id", "status", "sha256", "record_key", "record_sha256", "content_record_sha256")
"""A run's entry in a manifest: what its ``latest.json`` says and the hashes that pin it and its content record."""

STATUSES: tuple[str, ...] = get_args(RecordStatus)

_SCHEMA = """
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE entry (
    run_id TEXT PRIMARY KEY, status TEXT, sha256 TEXT, record_key TEXT, record_sha256 TEXT,
    content_record_sha256 TEXT, fetched_at TEXT
) WITHOUT ROWID;
"""
"""The entries kept on disk (the columns of :data:`ENTRY_FIELDS`, then when the run was fetched): written as the
batches finish, read back sorted by run id. Nothing of it needs to survive a crash."""

_SPARE_ROWS = 4
"""Rows are let grow a quarter past what is kept before the extra are dropped (one sort per that many runs)."""


def manifest_entry(record: RunInputRecord) -> list[str | None]:
    """One run's manifest entry, in :data:`ENTRY_FIELDS` order."""
    return [getattr(record, name) for name in ENTRY_FIELDS]


class AuditLedger:
    """Tallies an audit's outcome records as they come (:meth:`add`), then gives its summary, its report's
    figures and its manifest entries. Close it (or use it as a context manager) to remove its file.

    Every record counts in the summary; the manifest has one entry per run id (the last record given
    wins), and none for a run whose record could not be written (``not_stored``): it is not in the store.
    """

    def __init__(self, max_rows: int = SUMMARY_ROWS_MAX) -> None:
        self.max_rows = max_rows
        self._kept = max(max_rows, PROBLEMS_LISTED)  # the report names the first problems even past a small cap
        self.total = 0
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.drifted = 0
        self.shown: Counter[str] = Counter()
        self.violations_by_rule: Counter[str] = Counter()
        self.runs_by_rule: Counter[str] = Counter()
        self._rows: list[tuple[tuple[int, str], dict[str, Any]]] = []
        handle, self._path = tempfile.mkstemp(prefix="parallel-audit-", suffix=".sqlite")
        os.close(handle)
        try:  # used by one caller at a time, from whichever thread runs the flow's loop
            self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except BaseException:
            os.remove(self._path)
            raise

    @classmethod
    def of(cls, records: Iterable[RunInputRecord], max_rows: int = SUMMARY_ROWS_MAX) -> AuditLedger:
        ledger = cls(max_rows)
        try:
            ledger.add(records)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def add(self, records: Iterable[RunInputRecord]) -> None:
        """Tally records (a batch's, say); nothing of them is kept but a bounded number of summary rows."""
        stored = []
        for record in records:
            self.total += 1
            self.counts[record.status] += 1
            self.drifted += record.drift
            status = shown_status(record)
            self.shown[status] += 1
            self.violations_by_rule.update(v.rule for v in record.violations)
            self.runs_by_rule.update({v.rule for v in record.violations})
            self._rows.append(((PROBLEM_ORDER.index(status), record.run_id), summary_row(record)))
            if record.status != "not_stored":
                fetched_at = record.fetched_at.astimezone(timezone.utc).isoformat(timespec="microseconds")
                stored.append((*manifest_entry(record), fetched_at))  # one format: text order is time order
        if len(self._rows) > self._kept + self._kept // _SPARE_ROWS:
            self._trim_rows()
        self._db.executemany("INSERT OR REPLACE INTO entry VALUES (?, ?, ?, ?, ?, ?, ?)", stored)

    def _trim_rows(self) -> None:
        self._rows.sort(key=lambda item: item[0])  # stable: the same order as sorting every record at once
        del self._rows[self._kept :]

    def rows(self) -> list[dict[str, Any]]:
        """The summary table's rows: problems first (:data:`PROBLEM_ORDER`), then by run id; at most ``max_rows``."""
        self._trim_rows()
        return [row for _, row in self._rows[: self.max_rows]]

    def problem_rows(self) -> list[dict[str, Any]]:
        """The summary rows of the first :data:`PROBLEMS_LISTED` problem runs, in the table's order."""
        self._trim_rows()
        return [row for _, row in self._rows[:PROBLEMS_LISTED] if row["status"] != "ok"]

    def summary(self, *, duplicates: int = 0, manifest: str | None = None) -> AuditSummary:
        return AuditSummary(
            total=self.total,
            counts=dict(self.counts),
            drifted=self.drifted,
            duplicates=duplicates,
            rows=self.rows(),
            manifest_sha256=manifest,
        )

    @property
    def stored(self) -> int:
        """Distinct runs with a record in the store: the manifest's count."""
        return int(self._db.execute("SELECT count(*) FROM entry").fetchone()[0])

    def first_fetched_at(self) -> datetime | None:
        """When the earliest stored run was fetched, or ``None`` with none stored."""
        (first,) = self._db.execute("SELECT min(fetched_at) FROM entry").fetchone()
        return None if first is None else datetime.fromisoformat(first)

    def entries(self) -> Iterator[list[str | None]]:
        """The manifest's entries, sorted by run id (by code point, as Python sorts strings)."""
        columns = ", ".join(ENTRY_FIELDS)
        for row in self._db.execute("SELECT " + columns + " FROM entry ORDER BY run_id"):  # noqa: S608 (constants)
            yield list(row)

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path)

    def __enter__(self) -> AuditLedger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
