"""The conformance checker used by every emulator test does flag what does not conform."""

from __future__ import annotations

import json

from parallel_tasks.emulator import EmulatorResponse
from tests.emulator.spec import plan_problems, response_problems, run_input_problems

JSON = "application/json"


def test_flags_bodies_that_are_not_task_run_inputs() -> None:
    assert run_input_problems({"processor": "base", "input": "q"}) == []
    assert run_input_problems({"processor": 1, "input": "q"})
    assert run_input_problems({"processor": "base"})
    assert run_input_problems({"processor": "base", "input": "q", "source_policy": {"after_date": "yesterday"}})
    assert run_input_problems({"processor": "base", "input": "q", "memory_scope_key": "has space"})
    assert run_input_problems({"processor": "base", "input": "q", "webhook": {"event_types": []}})


def test_flags_error_bodies_outside_the_envelope() -> None:
    good = {"type": "error", "error": {"ref_id": "r", "message": "m"}}
    assert response_problems(404, JSON, json.dumps(good).encode()) == []
    assert response_problems(404, JSON, json.dumps({"error": good["error"]}).encode())
    assert response_problems(404, JSON, json.dumps({"type": "error", "error": {"message": "m"}}).encode())
    assert response_problems(404, "text/html", b"<html></html>")
    assert response_problems(200, JSON, b'{"processor": "ba')


def test_flags_a_wrong_content_length() -> None:
    body = json.dumps({"processor": "base", "input": "q"}).encode()
    plan = EmulatorResponse(200, (("content-type", JSON), ("content-length", "1")), body)
    assert plan_problems(plan) == ["content-length does not match the body"]
