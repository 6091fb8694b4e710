"""Hostile task-spec schemas: every check ends soon, lists at most 100 violations, and never blocks an event loop.

Each shape here took minutes or hours (or listed hundreds of thousands of violations) before the checks
were bounded; the timeout markers turn a hang into a failure.
"""
# ruff: noqa: E501 - the shape table keeps one case per line

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

from parallel_tasks import validation
from parallel_tasks.models import ValidationReport
from parallel_tasks.validation import MAX_VIOLATIONS, acheck_task_run_input, check_task_run_input
from tests.validation.test_validation import INPUT_SCHEMA, VALID

CATASTROPHIC = "^(a+)+$"  # exponential backtracking in a backtracking engine
NEAR_MISS = "a" * 35 + "!"  # hours of backtracking for re, one linear pass for RE2
MATCHING = "a" * 35


def with_schema(schema: dict[str, Any], run_input: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    body["task_spec"]["input_schema"]["json_schema"] = schema
    body["input"] = run_input
    return body


def doubling_refs(levels: int = 18) -> dict[str, Any]:
    """A schema of about 1 KB whose ``$ref``s double at each level: 2**levels leaves, each failing."""
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def found(report: ValidationReport) -> list[tuple[str, str]]:
    return [(v.path, v.rule) for v in report.violations]


PATTERN_SHAPES = [
    # (id, schema, input, expected (path, rule) pairs): the near miss must be judged, correctly and at once
    ("pattern", {"properties": {"s": {"pattern": CATASTROPHIC}}}, {"s": NEAR_MISS, "t": MATCHING}, [("$.input.s", "input.schema_mismatch")]),
    ("pattern-matches", {"properties": {"s": {"pattern": CATASTROPHIC}}}, {"s": MATCHING}, []),
    ("patternProperties", {"patternProperties": {CATASTROPHIC: {"type": "integer"}}}, {NEAR_MISS: "x", "aaa": "x"}, [("$.input.aaa", "input.schema_mismatch")]),
    ("propertyNames", {"propertyNames": {"pattern": CATASTROPHIC}}, {NEAR_MISS: 1, MATCHING: 1}, [("$.input", "input.schema_mismatch")]),
    ("additionalProperties", {"patternProperties": {CATASTROPHIC: {}}, "additionalProperties": False}, {NEAR_MISS: 1, MATCHING: 1}, [("$.input", "input.schema_mismatch")]),
    ("unevaluatedProperties", {"patternProperties": {CATASTROPHIC: {}}, "unevaluatedProperties": False}, {NEAR_MISS: 1, MATCHING: 1}, [("$.input", "input.schema_mismatch")]),
    # A nested $schema would make jsonschema switch to a draft-07 validator, with Python's re again.
    ("nested-draft-07", {"$defs": {"x": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": CATASTROPHIC}}, "properties": {"s": {"$ref": "#/$defs/x"}}}, {"s": NEAR_MISS}, [("$.input.s", "input.schema_mismatch")]),
]  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("schema", "run_input", "expected"), [case[1:] for case in PATTERN_SHAPES], ids=[case[0] for case in PATTERN_SHAPES]
)
def test_a_catastrophic_pattern_is_judged_in_linear_time(
    schema: dict[str, Any], run_input: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    report = check_task_run_input(with_schema(schema, run_input))
    assert found(report) == expected
    assert all(NEAR_MISS in v.message for v in report.violations if v.path == "$.input")  # the near miss is named


def test_a_pattern_re2_cannot_run_is_a_violation_naming_it() -> None:
    body = with_schema({"properties": {"s": {"pattern": "^(?=a)a$"}}}, {"s": "a"})  # look-ahead: valid, not RE2
    (violation,) = check_task_run_input(body).violations
    assert (violation.path, violation.rule, violation.severity) == (
        INPUT_SCHEMA,
        "input_schema.pattern_unsupported",
        "error",
    )
    assert violation.preview == "^(?=a)a$" and "RE2" in violation.message


@pytest.mark.timeout(30)
def test_unique_items_over_20000_objects_finds_the_duplicate() -> None:
    items = [{"id": i, "tags": [i, str(i)]} for i in range(20_000)]
    schema = {"properties": {"items": {"type": "array", "uniqueItems": True}}}
    assert check_task_run_input(with_schema(schema, {"items": items})).violations == ()
    (violation,) = check_task_run_input(
        with_schema(schema, {"items": [*items, {"tags": [7, "7"], "id": 7}]})
    ).violations
    assert (violation.path, violation.rule) == ("$.input.items", "input.schema_mismatch")
    assert "items 7 and 20000 are equal" in violation.message
    # JSON Schema equality: 1 and 1.0 are equal, true and 1 are not.
    assert check_task_run_input(with_schema(schema, {"items": [1, 1.0]})).violations
    assert not check_task_run_input(with_schema(schema, {"items": [True, 1, False, 0]})).violations


@pytest.mark.timeout(30)
def test_unique_items_in_the_meta_schema_check_is_bounded_too() -> None:
    # "required" must hold unique strings: 20,000 objects made the meta-schema check compare every pair.
    report = check_task_run_input(with_schema({"required": [{"i": i} for i in range(20_000)]}, {}))
    rules = {rule for _, rule in found(report)}
    assert rules and rules <= {"input_schema.invalid", "input_schema.too_expensive", "validation.too_many_violations"}
    assert len(report.violations) <= MAX_VIOLATIONS + 2


@pytest.mark.timeout(60)
def test_ref_doubling_stops_with_too_expensive_and_at_most_100_violations() -> None:
    report = check_task_run_input(with_schema(doubling_refs(18), {}))
    assert (INPUT_SCHEMA, "input_schema.too_expensive") in found(report)
    assert len(report.violations) <= MAX_VIOLATIONS + 2  # 100, the too_expensive one and the count
    assert report.verdict == "invalid"


def test_a_violation_flood_is_cut_to_100_and_a_count() -> None:
    body = with_schema({"properties": {"xs": {"items": {"type": "integer"}}}}, {"xs": ["x"] * 10_000})
    report = check_task_run_input(body)
    assert len(report.violations) == MAX_VIOLATIONS + 1
    assert found(report)[:MAX_VIOLATIONS] == [(f"$.input.xs[{i}]", "input.schema_mismatch") for i in range(100)]
    last = report.violations[-1]
    assert (last.path, last.rule, last.severity) == ("$", "validation.too_many_violations", "error")
    assert last.message.startswith("9900 more violations are not listed")


def test_the_count_is_an_error_only_when_it_hides_an_error() -> None:
    domains = [f"d{i}.com" for i in range(100)]  # each both included and excluded: a warning
    body: dict[str, Any] = {
        **VALID,
        "processor": "mystery",
        "source_policy": {"include_domains": domains, "exclude_domains": domains},
    }
    report = check_task_run_input(body)  # 101 warnings
    assert report.verdict == "valid_with_warnings"
    last = report.violations[-1]
    assert (last.rule, last.severity) == ("validation.too_many_violations", "warning") and last.message.startswith(
        "1 more"
    )
    body["source_policy"] = {**body["source_policy"], "after_date": "yesterday"}  # an error, after the warnings
    report = check_task_run_input(body)
    assert report.verdict == "invalid"
    last = report.violations[-1]
    assert (last.rule, last.severity) == ("validation.too_many_violations", "error") and last.message.startswith(
        "2 more"
    )


async def test_validation_runs_off_the_event_loop() -> None:
    validating = asyncio.ensure_future(acheck_task_run_input(with_schema(doubling_refs(18), {})))
    for _ in range(3):  # the loop keeps turning while the worker thread spends its budget
        await asyncio.sleep(0)
    assert not validating.done()
    assert (INPUT_SCHEMA, "input_schema.too_expensive") in found(await validating)


async def test_a_worker_that_never_answers_is_left_behind_with_a_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(validation, "OFF_LOOP_TIMEOUT", 0.05)
    monkeypatch.setattr(validation, "check_task_run_input", lambda _: release.wait(30))
    try:
        report = await acheck_task_run_input(VALID)
    finally:
        release.set()
    assert found(report) == [("$", "validation.too_expensive")]
    assert report.verdict == "invalid"
