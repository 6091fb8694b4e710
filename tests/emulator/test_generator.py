"""The run generator and the demo set: determinism, coverage, realism, and validity against both specs."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from importlib import resources
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from parallel_tasks.emulator import (
    INPUT_SCHEMA_FORMS,
    OUTPUT_SCHEMA_FORMS,
    PROCESSORS,
    demo_runs,
    generate_runs,
)
from parallel_tasks.models import TaskRunInput
from tests.emulator.spec import run_input_problems

RUN_ID = re.compile(r"^trun_[0-9a-f]{32}$")
NEWER_FIELDS = {
    "mcp_servers",
    "webhook",
    "advanced_settings",
    "memory_scope_key",
    "previous_interaction_id",
    "enable_events",
}
BASELINE_FIELDS = {"processor", "input", "metadata", "source_policy", "task_spec"}


def input_form(body: dict[str, Any]) -> str | None:
    """The input_schema form of a run, classified independently of the generator (None: no task_spec)."""
    spec = body.get("task_spec")
    if not spec:
        return None
    if "input_schema" not in spec:
        return "absent"
    schema = spec["input_schema"]
    if schema is None:
        return "null"
    if isinstance(schema, str):
        return "string"
    kind = "json" if "json_schema" in schema else "text"
    return kind if "type" in schema else f"{kind}-untyped"


def output_form(body: dict[str, Any]) -> str:
    if "task_spec" not in body:
        return "no-task-spec"
    if body["task_spec"] is None:
        return "null-task-spec"
    schema = body["task_spec"]["output_schema"]
    if isinstance(schema, str):
        return "string"
    if schema.get("type") == "auto":
        return "auto"
    kind = "json" if "json_schema" in schema else "text"
    return kind if "type" in schema else f"{kind}-untyped"


def test_same_seed_same_runs_other_seed_other_runs() -> None:
    assert generate_runs(40, seed=3) == generate_runs(40, seed=3)
    assert set(generate_runs(40, seed=3)).isdisjoint(generate_runs(40, seed=4))


def test_a_longer_list_extends_a_shorter_one() -> None:
    short, longer = generate_runs(10, seed=8), generate_runs(30, seed=8)
    assert list(longer.items())[:10] == list(short.items())


def test_ids_look_like_real_ones_and_are_unique(generated: dict[str, dict[str, Any]]) -> None:
    assert len(generated) == 300
    assert all(RUN_ID.match(run_id) for run_id in generated)
    assert len(generate_runs(0)) == 0


def test_every_processor_and_schema_form_is_covered(generated: dict[str, dict[str, Any]]) -> None:
    bodies = list(generated.values())
    assert {b["processor"] for b in bodies} == set(PROCESSORS)
    assert len(PROCESSORS) == 18 and "ultra8x-fast" in PROCESSORS
    assert {input_form(b) for b in bodies} - {None} == set(INPUT_SCHEMA_FORMS)
    assert {output_form(b) for b in bodies} == set(OUTPUT_SCHEMA_FORMS)


def test_the_first_56_runs_already_cover_every_form() -> None:
    bodies = list(generate_runs(56, seed=99).values())
    assert {input_form(b) for b in bodies} - {None} == set(INPUT_SCHEMA_FORMS)
    assert {output_form(b) for b in bodies} == set(OUTPUT_SCHEMA_FORMS)


def test_inputs_match_their_input_schema(generated: dict[str, dict[str, Any]]) -> None:
    kinds = Counter()
    for body in generated.values():
        form = input_form(body)
        if form in ("json", "json-untyped"):
            Draft202012Validator(body["task_spec"]["input_schema"]["json_schema"]).validate(body["input"])
        elif form in ("text", "text-untyped", "string"):
            assert isinstance(body["input"], str)
        kinds["json" if isinstance(body["input"], dict) else "text"] += 1
    assert kinds["json"] > 50 and kinds["text"] > 50


def test_metadata_respects_the_limits_and_mixes_value_types(generated: dict[str, dict[str, Any]]) -> None:
    types = Counter()
    for body in generated.values():
        for key, value in (body.get("metadata") or {}).items():
            assert len(key) <= 16
            assert not isinstance(value, str) or len(value) <= 512
            types[type(value).__name__] += 1
    assert set(types) == {"str", "int", "float", "bool"}


def test_source_policies_use_every_kind_of_entry(generated: dict[str, dict[str, Any]]) -> None:
    policies = [b["source_policy"] for b in generated.values() if "source_policy" in b]
    include = [d for p in policies for d in p.get("include_domains", [])]
    exclude = [d for p in policies for d in p.get("exclude_domains", [])]
    assert include and exclude
    assert any(d.startswith(".") for d in include + exclude), "bare extensions such as .gov"
    assert any("/" in d for d in include + exclude), "domain/path prefixes"
    assert any(d.count(".") >= 2 and not d.startswith(".") for d in include), "subdomains"
    dates = [p["after_date"] for p in policies if "after_date" in p]
    assert dates and all(date.fromisoformat(d) for d in dates)


def test_one_run_in_ten_has_the_newer_fields_with_secret_headers(
    generated: dict[str, dict[str, Any]],
) -> None:
    with_newer = [b for b in generated.values() if NEWER_FIELDS & set(b)]
    assert len(with_newer) == 30
    seen = Counter(field for b in with_newer for field in NEWER_FIELDS & set(b))
    assert set(seen) == NEWER_FIELDS
    headers = [h for b in with_newer for s in b.get("mcp_servers", []) for h in (s.get("headers") or {}).items()]
    assert any(name == "Authorization" and value.startswith("Bearer ") for name, value in headers)


def test_every_generated_and_demo_run_validates_against_both_specs(
    all_runs: dict[str, dict[str, Any]],
) -> None:
    for run_id, body in all_runs.items():
        assert not run_input_problems(body, "openapi-current.json"), run_id
        baseline = {k: v for k, v in body.items() if k not in NEWER_FIELDS}
        assert set(baseline) <= BASELINE_FIELDS, run_id
        assert not run_input_problems(baseline, "openapi.json"), run_id


def test_every_run_parses_with_the_package_models(all_runs: dict[str, dict[str, Any]]) -> None:
    for run_id, body in all_runs.items():
        model = TaskRunInput.model_validate(body)
        if "mcp_servers" not in body:  # secret headers dump masked, by design
            assert model.model_dump(mode="json", exclude_unset=True) == body, run_id


def test_bodies_look_realistic(generated: dict[str, dict[str, Any]]) -> None:
    texts = [b["input"] for b in generated.values() if isinstance(b["input"], str)]
    assert all(t.endswith(("?", ".")) and len(t) > 20 for t in texts)
    assert len(set(texts)) > 50


# -- the demo set ------------------------------------------------------------------------------------


def test_demo_ids_are_stable_and_look_real() -> None:
    runs = demo_runs()
    assert 10 <= len(runs) <= 14
    assert all(RUN_ID.match(run_id) for run_id in runs)
    assert "trun_bbf5d6d60a5a8aca6d19f35c5426fab0" in runs
    kinds = Counter(n.split(":")[0] if n.startswith(("INVALID:", "SECRET:")) else "good" for n in _notes().values())
    assert kinds["good"] >= 5 and kinds["INVALID"] == 4 and kinds["SECRET"] == 1
    # Cards in Prefect's UI are titled by the run id: no two demo ids share more than a short prefix.
    assert len({run_id[:7] for run_id in runs}) == len(runs)


def _notes() -> dict[str, str]:
    """What each demo run is for, from the shipped data file."""
    text = resources.files("parallel_tasks.emulator").joinpath("data/demo_runs.json").read_text(encoding="utf-8")
    return {record["run_id"]: record["note"] for record in json.loads(text)}


def test_demo_runs_is_a_fresh_copy() -> None:
    first = demo_runs()
    first["trun_bbf5d6d60a5a8aca6d19f35c5426fab0"]["processor"] = "changed"
    assert demo_runs()["trun_bbf5d6d60a5a8aca6d19f35c5426fab0"]["processor"] == "core"


def test_good_demo_runs_are_valid() -> None:
    for run_id, body in demo_runs().items():
        if not _notes()[run_id].startswith(("INVALID", "SECRET")):
            assert all(len(k) <= 16 for k in body.get("metadata", {})), run_id
            schema = (body.get("task_spec") or {}).get("input_schema")
            if isinstance(schema, dict) and "json_schema" in schema:
                Draft202012Validator(schema["json_schema"]).validate(body["input"])


@pytest.mark.parametrize(
    ("run_id", "problem"),
    [
        ("trun_89109e16101e7e3e169bfab28d7fa15b", "key"),
        ("trun_699cd4d3c7bc08ad3a88df4801f22fce", "value"),
        ("trun_537b41b8fcdb8660eb83460e4e82bc4d", "required"),
        ("trun_3feed882f7ae5fd649106344b662ebcd", "type"),
    ],
)
def test_invalid_demo_runs_break_what_they_claim(run_id: str, problem: str) -> None:
    body = demo_runs()[run_id]
    metadata = body.get("metadata", {})
    if problem == "key":
        assert any(len(key) > 16 for key in metadata)
    elif problem == "value":
        assert any(isinstance(v, str) and len(v) > 512 for v in metadata.values())
    else:
        schema = body["task_spec"]["input_schema"]["json_schema"]
        errors = list(Draft202012Validator(schema).iter_errors(body["input"]))
        assert [e.validator for e in errors] == [problem]


def test_secret_demo_run_carries_mcp_credentials() -> None:
    body = demo_runs()["trun_c65bdf4253cd1c336f522f2967103ca0"]
    headers = [s["headers"] for s in body["mcp_servers"]]
    assert headers[0]["Authorization"].startswith("Bearer ")
    assert set(body) >= NEWER_FIELDS
