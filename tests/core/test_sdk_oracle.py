"""Oracle: the official parallel-web SDK parses the same bodies into the same values as our models."""

from __future__ import annotations

from typing import Any

import pytest
from parallel.types import RunInput

from parallel_tasks import TaskRunInput
from tests.conftest import spec_examples
from tests.core.test_models import NEWER_FIELDS_BODY

BODIES = [body for _, _, status, body in spec_examples() if status == 200] + [
    NEWER_FIELDS_BODY,
    {"processor": "lite", "input": "plain text", "metadata": None, "task_spec": None, "source_policy": None},
    {"processor": "base", "input": {"q": 1}, "task_spec": {"output_schema": "bare", "input_schema": "also bare"}},
    {"processor": "pro", "input": "x", "task_spec": {"output_schema": {"description": "text"}}},
]


def revealed(value: Any) -> Any:
    """Our dump with secret values shown, for comparison with the SDK (which keeps them plain)."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v) for v in value]
    return value


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_sdk_and_our_model_agree_field_by_field(body: dict[str, Any]) -> None:
    ours = TaskRunInput.model_validate(body)
    theirs = RunInput.model_validate(body)
    for field in RunInput.model_fields:
        our_value = revealed(ours.model_dump(exclude_unset=True).get(field))
        their_value = theirs.model_dump(mode="json", exclude_unset=True).get(field)
        assert our_value == their_value, field
    assert set(RunInput.model_fields) <= set(TaskRunInput.model_fields)
