"""Final errors: runs the API refuses for good (401, 403, 402, 404, 422) are recorded with that outcome,
asked for once (never retried), and never stop the other runs of the audit, which still complete
while the API also throws retryable 503s and 429s at them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from parallel_tasks.emulator import Emulator, FaultConfig, demo_runs
from parallel_tasks.errors import error_class_for_status
from parallel_tasks.flows import audit_run_inputs
from parallel_tasks.lineage import status_for_error
from tests.reliability.conftest import (
    RELIABILITY_KEY,
    RecordingApp,
    check_complete_run,
    save_credentials,
    serve_app,
    stored_runs,
    stray_files,
)

pytestmark = [pytest.mark.usefixtures("prefect_harness", "fast_backoff"), pytest.mark.timeout(180)]

# What lineage.status_for_error makes of each final status, spelled out so a change of mapping is seen.
EXPECTED_STATUS = {401: "unauthorized", 403: "unauthorized", 402: "failed", 404: "not_found", 422: "failed"}
ERROR_NAMES = {
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    402: "PaymentRequiredError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
}


def test_expected_statuses_are_the_librarys_mapping() -> None:
    for status, outcome in EXPECTED_STATUS.items():
        error = error_class_for_status(status)("refused", status_code=status, run_id="trun_x")
        assert type(error).__name__ == ERROR_NAMES[status]
        assert status_for_error(error) == outcome


def test_final_errors_are_recorded_and_every_other_run_completes(
    emu: Emulator, rel_url: str, rel_runs: dict[str, Any], storage: tuple[str, Path]
) -> None:
    slug, folder = storage
    generated = list(rel_runs)[:90]
    invalid = [run_id for run_id in demo_runs() if run_id.startswith("trun_bad")]
    final: dict[str, int] = {}
    for status, chunk in zip(
        (401, 403, 402, 422), (generated[0:4], generated[4:7], generated[7:9], generated[9:13]), strict=True
    ):
        for run_id in chunk:
            emu.set_faults(FaultConfig(status=status), run_id=run_id)  # answers this status every time
            final[run_id] = status
    for number in range(4):
        missing = f"trun_{0xDEAD0000 + number:032x}"  # an id the API has never heard of
        emu.set_faults(FaultConfig(), run_id=missing)  # and no 503 before its 404, so one request
        final[missing] = 404
    completing = [run_id for run_id in [*generated, *invalid] if run_id not in final]
    emu.set_faults(FaultConfig(rates={503: 0.2, 429: 0.05}, retry_after_s=0.01))  # the others still get faults
    run_ids = [*completing[:40], *final, *completing[40:]]

    state = audit_run_inputs(
        run_ids=run_ids,
        credentials_block=save_credentials(RELIABILITY_KEY, rel_url, max_retries=10),
        storage_block=slug,
        max_concurrency=8,
        batch_size=20,
        return_state=True,
    )

    assert state.is_failed()
    assert state.message.startswith(f"{len(final)} of {len(run_ids)} runs could not be fetched"), state.message
    summary = state.result(raise_on_failure=False)
    assert summary.counts == {
        "ok": len(completing) - len(invalid),
        "invalid": len(invalid),
        "not_found": 4,
        "unauthorized": 7,
        "failed": 6,
        "not_stored": 0,
    }

    runs = stored_runs(folder)
    assert sorted(runs) == sorted(run_ids) and not stray_files(folder)
    assert not [path for run in runs.values() for path in run.partials]
    for run_id, status in final.items():
        run = runs[run_id]
        assert len(run.latest) == 1 and not run.contents and not run.others, run
        pointer = run.pointer()
        assert pointer.status == EXPECTED_STATUS[status], (run_id, pointer)
        assert pointer.sha256 is None and pointer.input is None
        assert pointer.error is not None and pointer.error.startswith(f"{ERROR_NAMES[status]}: {status} "), pointer
        assert run_id in pointer.error
        assert emu.requests_by_run[run_id] == 1, run_id  # a final status is never retried
    outcomes = Counter(check_complete_run(runs[run_id]).status for run_id in completing)
    assert outcomes == Counter({"ok": len(completing) - len(invalid), "invalid": len(invalid)})
    assert emu.requests_by_status[503] > 0 and emu.requests_by_status[429] > 0  # the others did meet faults
    final_statuses = Counter(record.status for record in emu.log if record.run_id in final)
    assert final_statuses == Counter(final.values())


def test_one_hostile_response_costs_only_its_own_run(storage: tuple[str, Path]) -> None:
    slug, folder = storage
    run_ids = [f"trun_{0xB0B00000 + number:032x}" for number in range(30)]
    hostile = {
        run_ids[3]: (200, [("content-type", "application/json")], b'{"processor":"core","input":"q","x":NaN}'),
        run_ids[13]: (502, [("content-type", "application/json")], b"[" * 100_000),
        run_ids[23]: (300, [("location", "http://[::1")], b""),
    }

    def answer(scope: Any, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        run_id = scope["path"].split("/")[4]
        body = json.dumps({"processor": "core", "input": f"question of {run_id}"}).encode()
        return hostile.get(run_id, (200, [("content-type", "application/json")], body))

    app = RecordingApp(answer)
    with serve_app(app) as base_url:
        state = audit_run_inputs(
            run_ids=run_ids,
            credentials_block=save_credentials(RELIABILITY_KEY, base_url, max_retries=1),
            storage_block=slug,
            batch_size=10,  # one hostile run in each batch
            max_concurrency=4,
            return_state=True,
        )
    summary = state.result(raise_on_failure=False)
    assert summary.counts["ok"] == 27 and summary.counts["failed"] == 3, summary.describe()
    runs = stored_runs(folder)
    assert sorted(runs) == sorted(run_ids)
    assert sorted(run_id for run_id, run in runs.items() if run.pointer().status == "failed") == sorted(hostile)


def test_a_run_whose_recording_raises_costs_only_its_own_run(
    storage: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks while one run is validated and recorded (here: a bug, simulated) makes that run
    failed, with the error named, and the rest of its batch still gets fetched and recorded."""
    from parallel_tasks import tasks

    slug, folder = storage
    run_ids = [f"trun_{0xC0C00000 + number:032x}" for number in range(12)]
    broken = run_ids[5]
    real_validate = tasks.acheck_task_run_input

    async def validate(run_input: Any) -> Any:
        if run_input.input == f"question of {broken}":
            raise KeyError("simulated bug in the validation")
        return await real_validate(run_input)

    monkeypatch.setattr(tasks, "acheck_task_run_input", validate)

    def answer(scope: Any, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        run_id = scope["path"].split("/")[4]
        return (
            200,
            [("content-type", "application/json")],
            json.dumps({"processor": "core", "input": f"question of {run_id}"}).encode(),
        )

    with serve_app(RecordingApp(answer)) as base_url:
        state = audit_run_inputs(
            run_ids=run_ids,
            credentials_block=save_credentials(RELIABILITY_KEY, base_url, max_retries=0),
            storage_block=slug,
            batch_size=len(run_ids),  # all in one batch
            max_concurrency=2,
            return_state=True,
        )
    summary = state.result(raise_on_failure=False)
    assert summary.counts["ok"] == 11 and summary.counts["failed"] == 1, summary.describe()
    (row,) = [row for row in summary.rows if row["status"] == "failed"]
    assert row["run_id"] == broken and "simulated bug in the validation" in str(row), row
    runs = stored_runs(folder)
    assert sorted(runs) == sorted(run_ids)
    assert runs[broken].pointer().status == "failed"
