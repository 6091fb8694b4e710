"""schemathesis, a tester we did not write, finds no non-conformance of the emulator to spec/openapi.json.

Two runs, about 20 s together (30 s under coverage):

- fuzzing over the ASGI app with the spec as it is (random run ids: 404s, 422s, unsupported methods,
  requests without the key); every default check is on;
- the spec's examples phase over a real server, with examples of run ids that exist added to the
  ``run_id`` parameter in memory, so 200 bodies are checked against TaskRunInput too.

One setting departs from the defaults, on purpose: ``positive_data_acceptance`` also accepts 422.
The spec types ``run_id`` as any string but documents 422 "Request validation error" for this very
operation, and the emulator answers it for ids no client could mean (control characters, empty,
over 256 characters). Every response must still be a documented status with a conforming body.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from parallel_tasks.emulator import demo_runs, generate_runs, run_emulator_server
from tests.emulator.conftest import API_KEY, CheckedEmulator
from tests.emulator.spec import SPEC_DIR

SPEC = json.loads((SPEC_DIR / "openapi.json").read_text())
RUNS = {**generate_runs(40, seed=21), **demo_runs()}


def config(max_examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "headers": {"x-api-key": API_KEY},
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "422"]}},
            "generation": {"max-examples": max_examples},
        }
    )


def spec_with_run_id_examples() -> dict[str, Any]:
    """The spec, plus examples of run ids that exist (and one that does not) on the run_id parameter."""
    spec = copy.deepcopy(SPEC)
    (parameter,) = spec["paths"]["/v1/tasks/runs/{run_id}/input"]["get"]["parameters"]
    ids = [*RUNS, "trun_00000000000000000000000000000000"]
    parameter["examples"] = {f"run{index}": {"value": run_id} for index, run_id in enumerate(ids)}
    return spec


FUZZ_EMULATOR = CheckedEmulator(RUNS, api_keys=[API_KEY])
fuzz_schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=config(max_examples=1000))
fuzz_schema.app = FUZZ_EMULATOR.app

examples_schema = schemathesis.openapi.from_dict(spec_with_run_id_examples(), config=config(max_examples=100))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[CheckedEmulator, str]]:
    emulator = CheckedEmulator(RUNS, api_keys=[API_KEY])
    with run_emulator_server(emulator) as base_url:
        yield emulator, base_url


@fuzz_schema.parametrize()
def test_fuzzing_the_asgi_app_finds_no_non_conformance(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_fuzzing_reached_every_documented_status() -> None:
    """Runs after the fuzzing test: it must have exercised the interesting answers, all conforming."""
    if not FUZZ_EMULATOR.checked:
        pytest.skip("meaningful only after test_fuzzing_the_asgi_app_finds_no_non_conformance")
    statuses = set(FUZZ_EMULATOR.requests_by_status)
    assert {401, 404, 405, 422} <= statuses, statuses
    assert FUZZ_EMULATOR.checked > 300
    assert not FUZZ_EMULATOR.violations, FUZZ_EMULATOR.violations[:5]


@examples_schema.parametrize()
def test_examples_of_real_runs_over_a_real_server(case: schemathesis.Case, served: tuple[CheckedEmulator, str]) -> None:
    case.call_and_validate(base_url=served[1])


def test_examples_reached_every_stored_run(served: tuple[CheckedEmulator, str]) -> None:
    emulator, _ = served
    assert set(RUNS) <= {run_id for run_id, count in emulator.requests_by_run.items() if count}
    assert emulator.requests_by_status[200] >= len(RUNS)
    assert not emulator.violations, emulator.violations[:5]
