"""Faults: an audit of 1,000 runs through an API that fails 28% of the time still records every run once.

The emulator injects 20% 5xx (500, 502, 503), 5% 429 with Retry-After, 2% connection resets and 1%
truncated bodies, over real HTTP. Its fault draws are a pure function of (seed, run id, attempt), so
the exact number of requests each run needs is known in advance; the test asserts the emulator saw
exactly that, no more (no retry beyond the bounds, no request repeated) and no less.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from parallel_tasks.emulator import Emulator, FaultConfig
from parallel_tasks.flows import audit_run_inputs
from tests.reliability.conftest import RELIABILITY_KEY, check_complete_run, save_credentials, stored_runs, stray_files

pytestmark = [pytest.mark.usefixtures("prefect_harness", "fast_backoff"), pytest.mark.timeout(300)]

FAULTS = FaultConfig(
    rates={500: 0.07, 502: 0.06, 503: 0.07, 429: 0.05, "reset": 0.02, "truncate": 0.01},
    retry_after="seconds",
    retry_after_s=0.02,
)
FAILURE_RATE = 0.28
# At 28% per attempt a run fails all of n + 1 attempts with probability 0.28 ** (n + 1): with 10 retries,
# 1,000 runs leave 0.28 ** 11 * 1000 = 8e-4 runs unfetched in expectation. The seed is fixed anyway,
# and the test computes below exactly how many attempts each run needs.
MAX_RETRIES = 10


def attempts_needed(faults: FaultConfig, seed: int, run_id: str) -> int:
    """Requests the run needs: the emulator answers normally at the first attempt with no fault drawn."""
    attempt = 0
    while faults.choose(seed, run_id, attempt) is not None:
        attempt += 1
    return attempt + 1


def test_the_emulator_fails_at_the_configured_rates_and_the_bounds_leave_no_room_for_bad_luck() -> None:
    """The emulator's fault draws (not this file's numbers) fail about 28% of attempts, each kind at its
    own rate; at the rate measured, ten retries leave all eleven attempts of a run failing for less than
    a thousandth of a run in 1,000."""
    draws = 20_000
    drawn = Counter(FAULTS.choose(7, f"trun_{n:032x}", n % 5) for n in range(draws))
    measured = 1 - drawn[None] / draws
    assert measured == pytest.approx(FAILURE_RATE, abs=0.015)
    for fault, rate in FAULTS.rates.items():
        assert drawn[fault] / draws == pytest.approx(rate, abs=0.006), fault
    assert measured ** (MAX_RETRIES + 1) * 1000 < 1e-3


def test_audit_of_1000_runs_under_faults_records_each_run_exactly_once(
    emu: Emulator, rel_url: str, rel_runs: dict[str, Any], storage: tuple[str, Path]
) -> None:
    slug, folder = storage
    run_ids = list(rel_runs)
    assert len(run_ids) == 1000
    needed = {run_id: attempts_needed(FAULTS, emu.seed, run_id) for run_id in run_ids}
    assert max(needed.values()) <= MAX_RETRIES + 1  # with this seed every run gets through
    expected_faults = sum(needed.values()) - len(run_ids)
    assert 0.2 * len(run_ids) < expected_faults < 0.6 * len(run_ids)  # ~0.28 / 0.72 = 39% extra requests
    emu.set_faults(FAULTS)

    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=save_credentials(RELIABILITY_KEY, rel_url, max_retries=MAX_RETRIES),
        storage_block=slug,
        max_concurrency=32,
        return_state=True,
    )

    # The flow: every run fetched (ok or invalid), each reported once.
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.total == 1000 and summary.counts["ok"] + summary.counts["invalid"] == 1000, summary.describe()
    assert summary.duplicates == 0 and sorted(row["run_id"] for row in summary.rows) == sorted(run_ids)

    # The storage: one folder per run, each holding one latest.json and one content record that verifies.
    runs = stored_runs(folder)
    assert sorted(runs) == sorted(run_ids)
    assert not stray_files(folder) and not [path for run in runs.values() for path in run.partials]
    statuses = Counter(check_complete_run(run).status for run in runs.values())
    assert statuses == Counter({k: v for k, v in summary.counts.items() if v})

    # The requests: exactly the attempts the fault draws call for, within the retry bounds.
    log = emu.log
    assert emu.requests_by_run == Counter(needed)
    assert max(emu.requests_by_run.values()) <= MAX_RETRIES + 1
    assert len(log) == sum(emu.requests_by_run.values()) <= len(run_ids) * (MAX_RETRIES + 1)
    injected = Counter(record.fault for record in log if record.fault is not None)
    assert len(log) == 1000 + sum(injected.values()) and sum(injected.values()) == expected_faults
    assert set(injected) == {"500", "502", "503", "429", "reset", "truncate"}, injected  # each kind really played
    clean = [record for record in log if record.fault is None]
    assert len(clean) == 1000 and {record.run_id for record in clean} == set(run_ids)
    assert all(record.status == 200 for record in clean)
    # A run's only clean answer is its last request: nothing was fetched again after it succeeded.
    last_attempt = {record.run_id: record.attempt for record in clean}
    assert all(last_attempt[run_id] == needed[run_id] - 1 for run_id in run_ids)
