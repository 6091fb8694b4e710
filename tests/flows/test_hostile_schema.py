"""An audit with one hostile task-spec schema: that run is too expensive, every other run ends as it would alone."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.audit_run_inputs import audit_run_inputs
from parallel_tasks import ParallelCredentials
from parallel_tasks.emulator import Emulator, generate_runs, run_emulator_server
from tests.flows.conftest import FLOW_KEY
from tests.validation.test_schema_bounds import doubling_refs

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOSTILE = "trun_" + "e" * 32


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    innocent = generate_runs(199, seed=5)
    hostile = copy.deepcopy(next(iter(innocent.values())))
    hostile["input"] = {}
    hostile["task_spec"] = {
        "output_schema": {"type": "text"},
        "input_schema": {"type": "json", "json_schema": doubling_refs(18)},  # minutes of work, unbounded
    }
    return {**dict(list(innocent.items())[:100]), HOSTILE: hostile, **dict(list(innocent.items())[100:])}


@pytest.fixture(scope="module")
def credentials_block(prefect_harness: None, runs: dict[str, Any]) -> Iterator[str]:
    with run_emulator_server(Emulator(runs, api_keys=[FLOW_KEY])) as base_url:
        name = f"hostile-{uuid.uuid4().hex[:8]}"
        ParallelCredentials(api_key=FLOW_KEY, base_url=base_url).save(name, overwrite=True)
        yield name


@pytest.mark.timeout(300)
def test_one_hostile_schema_in_an_audit_of_200_runs_fails_no_other_run(
    runs: dict[str, Any], credentials_block: str, storage: tuple[str, Path]
) -> None:
    state = audit_run_inputs(
        run_ids=list(runs),
        credentials_block=credentials_block,
        storage_block=storage[0],
        batch_size=50,
        return_state=True,
    )
    summary = state.result()
    statuses = {row["run_id"]: (row["status"], row["detail"]) for row in summary.rows}
    assert len(statuses) == 200
    hostile_status, hostile_rules = statuses.pop(HOSTILE)
    assert {status for status, _ in statuses.values()} == {"ok"}, [s for s in statuses.items() if s[1][0] != "ok"][:5]
    assert hostile_status == "invalid" and "input_schema.too_expensive" in hostile_rules
