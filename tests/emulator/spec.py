"""The spec's response schemas as jsonschema validators, with $ref resolved inside the spec file."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from parallel_tasks.emulator import EmulatorResponse

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


@cache
def validator(spec_file: str, schema_name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>`` of a spec file (formats checked)."""
    spec = json.loads((SPEC_DIR / spec_file).read_text())
    uri = f"urn:spec:{spec_file}"
    registry: Registry[Any] = Registry().with_resource(uri, DRAFT202012.create_resource(spec))
    return Draft202012Validator(
        {"$ref": f"{uri}#/components/schemas/{schema_name}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def run_input_problems(body: Any, spec_file: str = "openapi-current.json") -> list[str]:
    """Why a body is not a TaskRunInput of the given spec (empty when it is)."""
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator(spec_file, "TaskRunInput").iter_errors(body)]


def response_problems(status: int, content_type: str, body: bytes) -> list[str]:
    """Why a response does not conform: 200 bodies are TaskRunInputs, others the error envelope."""
    if not content_type.startswith("application/json"):
        return [f"content-type {content_type!r} is not application/json"]
    try:
        data = json.loads(body)
    except ValueError as exc:
        return [f"body is not JSON: {exc}"]
    if status == 200:
        return run_input_problems(data)
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator("openapi.json", "ErrorResponse").iter_errors(data)
    ]


def plan_problems(plan: EmulatorResponse) -> list[str]:
    """Conformance problems of a response the emulator planned, skipping the deliberately broken ones."""
    if plan.fault in ("html", "truncate"):
        return []
    headers = dict(plan.headers)
    problems = response_problems(plan.status, headers.get("content-type", ""), plan.body)
    if headers.get("content-length") != str(len(plan.body)):
        problems.append("content-length does not match the body")
    return problems
