"""Fixtures for the emulator tests: generated runs, and emulators whose every response is checked.

``CheckedEmulator`` validates each response it plans against the spec (200 bodies against
openapi-current.json's TaskRunInput, error bodies against ErrorResponse). Every transport and the
real server go through ``handle``, so every response a test sees is checked; the fixture fails the
test at teardown if any did not conform.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from parallel_tasks.emulator import Emulator, EmulatorResponse, demo_runs, generate_runs
from tests.emulator.spec import plan_problems

API_KEY = "emu-test-key"
BASE = "http://emulator.test"


def run_path(run_id: str) -> str:
    return f"/v1/tasks/runs/{run_id}/input"


class CheckedEmulator(Emulator):
    """An emulator that records every planned response which does not conform to the spec."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.violations: list[str] = []
        self.checked = 0

    def handle(self, method: str, path: str, headers: Mapping[str, str]) -> EmulatorResponse:
        plan = super().handle(method, path, headers)
        self.checked += 1
        self.violations.extend(f"{method} {path} -> {plan.status}: {p}" for p in plan_problems(plan))
        return plan


@pytest.fixture(scope="session")
def generated() -> dict[str, dict[str, Any]]:
    """300 generated runs (seed 11), shared by the session: never mutate them."""
    return generate_runs(300, seed=11)


@pytest.fixture(scope="session")
def all_runs(generated: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**generated, **demo_runs()}


@pytest.fixture
def emulator(all_runs: dict[str, dict[str, Any]]) -> Iterator[CheckedEmulator]:
    """The generated and demo runs, key ``API_KEY``, no faults, seed 5; every response checked."""
    emu = CheckedEmulator(all_runs, api_keys=[API_KEY], seed=5)
    yield emu
    assert not emu.violations, "\n".join(emu.violations[:20])


@pytest.fixture
def client(emulator: CheckedEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emulator.transport(), base_url=BASE, headers={"x-api-key": API_KEY}) as c:
        yield c
