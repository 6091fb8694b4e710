"""The models match the spec: every example round-trips, unions resolve by type, nothing is dropped."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from parallel_tasks.models import (
    AutoSchema,
    ErrorResponse,
    JsonSchema,
    TaskRunInput,
    TaskSpec,
    TextSchema,
    normalize_schema,
)
from tests.conftest import load_spec, spec_examples

SUCCESS_EXAMPLES = [(label, body) for _, label, status, body in spec_examples() if status == 200]
ERROR_EXAMPLES = [(label, body) for _, label, status, body in spec_examples() if status != 200]

NEWER_FIELDS_BODY: dict[str, Any] = {
    "processor": "ultra2x-fast",
    "input": {"company": "Acme", "year": 2024},
    "metadata": {"team": "research", "priority": 2, "score": 0.75, "reviewed": True},
    "memory_scope_key": "team-research_01",
    "previous_interaction_id": "trun_0123456789abcdef0123456789abcdef",
    "enable_events": False,
    "advanced_settings": {"location": "gb", "data_sources": {"pay_per_use": ["crunchbase"], "free": []}},
    "mcp_servers": [
        {
            "type": "url",
            "url": "https://mcp.example.com/sse",
            "name": "crm",
            "headers": {"Authorization": "Bearer mcp-secret-token-123"},
            "allowed_tools": ["search"],
        }
    ],
    "webhook": {"url": "https://hooks.example.com/parallel", "event_types": ["task_run.status"]},
    "source_policy": {
        "include_domains": ["docs.python.org/3", ".gov"],
        "exclude_domains": ["reddit.com"],
        "after_date": "2024-01-01",
    },
    "task_spec": {"output_schema": {"type": "auto"}, "input_schema": "A company and a year"},
    "a_field_from_the_future": {"nested": [1, 2, {"deep": None}]},
}


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", exclude_unset=True)


def test_both_spec_files_have_examples() -> None:
    assert len(SUCCESS_EXAMPLES) == 2
    assert len(ERROR_EXAMPLES) == 6


@pytest.mark.parametrize(("label", "body"), SUCCESS_EXAMPLES)
def test_success_examples_round_trip(label: str, body: dict[str, Any]) -> None:
    assert dump(TaskRunInput.model_validate(body)) == body
    assert dump(TaskRunInput.model_validate_json(json.dumps(body))) == body


@pytest.mark.parametrize(("label", "body"), ERROR_EXAMPLES)
def test_error_examples_round_trip(label: str, body: dict[str, Any]) -> None:
    parsed = ErrorResponse.model_validate(body)
    assert dump(parsed) == body
    assert parsed.error.ref_id == "fcb2b4f3-c75e-4186-87bc-caa1a8381331"


def test_every_schema_in_the_baseline_spec_has_a_model() -> None:
    import parallel_tasks.models as models

    for name in load_spec("openapi.json")["components"]["schemas"]:
        assert hasattr(models, name), f"no model for {name}"
    for name in load_spec("openapi-current.json")["components"]["schemas"]:
        assert hasattr(models, name), f"no model for {name}"


def test_newer_fields_are_modelled_and_unknown_ones_kept() -> None:
    parsed = TaskRunInput.model_validate(NEWER_FIELDS_BODY)
    assert parsed.memory_scope_key == "team-research_01"
    assert parsed.advanced_settings is not None and parsed.advanced_settings.location == "gb"
    assert parsed.webhook is not None and parsed.webhook.event_types == ["task_run.status"]
    assert parsed.source_policy is not None and parsed.source_policy.after_date == "2024-01-01"
    assert parsed.model_extra == {"a_field_from_the_future": {"nested": [1, 2, {"deep": None}]}}
    assert parsed.mcp_servers is not None
    headers = parsed.mcp_servers[0].headers
    assert headers is not None and headers["Authorization"].get_secret_value() == "Bearer mcp-secret-token-123"


def test_mcp_header_values_never_show_in_repr_or_dump() -> None:
    parsed = TaskRunInput.model_validate(NEWER_FIELDS_BODY)
    assert "mcp-secret-token-123" not in repr(parsed)
    assert "mcp-secret-token-123" not in str(parsed)
    assert "mcp-secret-token-123" not in parsed.model_dump_json()
    # Everything else comes back exactly; the header value is masked, the header name is kept.
    expected = copy.deepcopy(NEWER_FIELDS_BODY)
    expected["mcp_servers"][0]["headers"]["Authorization"] = "**********"
    assert dump(parsed) == expected


def test_metadata_values_keep_their_json_types() -> None:
    parsed = TaskRunInput.model_validate(
        {"processor": "base", "input": "q", "metadata": {"s": "1", "i": 1, "f": 1.5, "b": True}}
    )
    assert parsed.metadata is not None
    assert [type(v) for v in parsed.metadata.values()] == [str, int, float, bool]


@pytest.mark.parametrize(
    ("schema", "expected_type"),
    [
        ({"type": "json", "json_schema": {"type": "object"}}, JsonSchema),
        ({"json_schema": {"type": "object"}}, JsonSchema),
        ({"type": "text", "description": "d"}, TextSchema),
        ({"description": "d"}, TextSchema),
        ({}, TextSchema),
        ({"type": "auto"}, AutoSchema),
        ("a bare string", str),
    ],
)
def test_output_schema_union_resolves_by_type(schema: Any, expected_type: type) -> None:
    spec = TaskSpec.model_validate({"output_schema": schema})
    assert type(spec.output_schema) is expected_type
    assert dump(spec) == {"output_schema": schema}


def test_input_schema_refuses_auto_and_unknown_types() -> None:
    with pytest.raises(ValidationError):
        TaskSpec.model_validate({"output_schema": "x", "input_schema": {"type": "auto"}})
    with pytest.raises(ValidationError):
        TaskSpec.model_validate({"output_schema": {"type": "xml"}})


@pytest.mark.parametrize(
    "body",
    [
        {"input": "q"},
        {"processor": "base"},
        {"processor": 1, "input": "q"},
        {"processor": "base", "input": ["a list"]},
        {"processor": "base", "input": "q", "metadata": {"k": [1]}},
        {"processor": "base", "input": "q", "task_spec": {"input_schema": "no output schema"}},
    ],
)
def test_bodies_outside_the_schema_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TaskRunInput.model_validate(body)


def test_normalize_schema() -> None:
    assert normalize_schema("GDP in USD") == TextSchema(description="GDP in USD")
    json_schema = JsonSchema(json_schema={"type": "object"})
    assert normalize_schema(json_schema) is json_schema
    assert normalize_schema(None) is None
    spec = TaskSpec.model_validate({"output_schema": "out", "input_schema": "in"})
    assert spec.normalized_output_schema() == TextSchema(description="out")
    assert spec.normalized_input_schema() == TextSchema(description="in")
