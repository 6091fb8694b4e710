"""Run-input validation: every rule at its path, all violations at once, never an exception, never any I/O."""
# ruff: noqa: E501 - the rule table keeps one case per line

from __future__ import annotations

import builtins
import contextlib
import copy
import doctest
import io
import json
import os
import re
import socket
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from parallel_tasks import _schema_bounds, _schema_rules, validation
from parallel_tasks.models import TaskRunInput, ValidationReport, Violation
from parallel_tasks.validation import KNOWN_PROCESSORS, check_task_run_input
from tests.conftest import spec_examples

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A body that breaks no rule and uses every field a rule looks at.
VALID: dict[str, Any] = {
    "processor": "core",
    "input": {"country": "France", "year": 2023},
    "metadata": {"my_key": "my_value", "priority": 2, "score": 0.5, "reviewed": True},
    "memory_scope_key": "team-research_01",
    "source_policy": {
        "include_domains": ["wikipedia.org", "docs.python.org/3", ".edu"],
        "exclude_domains": ["reddit.com", "youtube.com/shorts"],
        "after_date": "2024-01-01",
    },
    "task_spec": {
        "output_schema": {
            "type": "json",
            "json_schema": {"type": "object", "properties": {"gdp": {"type": "string"}}, "required": ["gdp"]},
        },
        "input_schema": {
            "type": "json",
            "json_schema": {
                "type": "object",
                "properties": {"country": {"type": "string"}, "year": {"type": "integer"}},
                "required": ["country", "year"],
                "additionalProperties": False,
            },
        },
    },
}

INPUT_SCHEMA = "$.task_spec.input_schema.json_schema"


def body_with(*changes: tuple[tuple[str | int, ...], Any]) -> dict[str, Any]:
    """VALID with each (path, value) set; the value ``DELETE`` removes the key."""
    body = copy.deepcopy(VALID)
    for path, value in changes:
        parent = body
        for segment in path[:-1]:
            parent = parent[segment]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return body


DELETE = object()


def triples(report: ValidationReport) -> list[tuple[str, str, str]]:
    return [(v.path, v.rule, v.severity) for v in report.violations]


def assert_well_formed(report: ValidationReport) -> None:
    assert isinstance(report, ValidationReport)
    for violation in report.violations:
        assert isinstance(violation, Violation)
        assert violation.path.startswith("$")
        assert violation.severity in ("error", "warning")
        assert violation.message
        assert len(violation.preview) <= 80


def unescape_metadata_key(path: str) -> str:
    """Read a metadata key back out of its path: the path must name exactly that key."""
    if match := re.fullmatch(r"\$\.metadata\.([A-Za-z0-9_-]+)", path):
        return match.group(1)
    match = re.fullmatch(r"\$\.metadata\['(.*)'\]", path, flags=re.DOTALL)
    assert match, path
    return re.sub(
        r"\\(u[0-9a-f]{4}|.)",
        lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5 else m.group(1),
        match.group(1),
        flags=re.DOTALL,
    )


# --- Every rule, table-driven ----------------------------------------------------------------------

LONG = "x" * 513
# (id, body, expected (path, rule, severity) triples, exactly, in order; a fragment the message must contain)
# fmt: off
CASES: list[tuple[str, Any, list[tuple[str, str, str]], str]] = [
    # metadata keys
    ("key-17", body_with((("metadata", "abcdefghijklmnopq"), 1)), [("$.metadata.abcdefghijklmnopq", "metadata.key_too_long", "error")], "16"),
    ("key-empty", body_with((("metadata", ""), 1)), [("$.metadata['']", "metadata.key_empty", "error")], "16"),
    ("key-spaces", body_with((("metadata", "key with spaces!!"), 1)), [("$.metadata['key with spaces!!']", "metadata.key_too_long", "error")], "17 characters"),
    ("key-dots", body_with((("metadata", "a.b.c.d.e.f.g.h.i"), 1)), [("$.metadata['a.b.c.d.e.f.g.h.i']", "metadata.key_too_long", "error")], "16"),
    ("key-quote", body_with((("metadata", "it's a long key!!"), 1)), [("$.metadata['it\\'s a long key!!']", "metadata.key_too_long", "error")], "16"),
    ("key-non-string", body_with((("metadata", 7), 1)), [("$.metadata.7", "body.wrong_type", "error")], "string"),
    # metadata values
    ("value-513", body_with((("metadata", "my_key"), LONG)), [("$.metadata.my_key", "metadata.value_too_long", "error")], "512"),
    ("int-513-digits", body_with((("metadata", "n"), 10**512)), [("$.metadata.n", "metadata.value_too_long", "error")], "512"),
    ("int-huge", body_with((("metadata", "n"), 10**5000)), [("$.metadata.n", "metadata.value_too_long", "error")], "512"),
    ("value-null", body_with((("metadata", "n"), None)), [("$.metadata.n", "metadata.value_type", "error")], "string, integer, number or boolean"),
    ("value-list", body_with((("metadata", "n"), [1, 2])), [("$.metadata.n", "metadata.value_type", "error")], "array"),
    ("value-dict", body_with((("metadata", "n"), {"a": 1})), [("$.metadata.n", "metadata.value_type", "error")], "object"),
    ("value-nan", body_with((("metadata", "n"), float("nan"))), [("$.metadata.n", "metadata.value_type", "error")], "finite"),
    ("value-list-long", body_with((("metadata", "n"), ["x" * 600])), [("$.metadata.n", "metadata.value_type", "error"), ("$.metadata.n", "metadata.value_too_long", "error")], "512"),
    ("metadata-list", body_with((("metadata",), ["a"])), [("$.metadata", "body.wrong_type", "error")], "object or null"),
    ("metadata-null", body_with((("metadata",), None)), [], ""),
    # processor
    ("processor-unknown", body_with((("processor",), "turbo")), [("$.processor", "processor.unknown", "warning")], "ultra8x-fast"),
    ("processor-case", body_with((("processor",), "Base")), [("$.processor", "processor.unknown", "warning")], "known"),
    ("processor-missing", body_with((("processor",), DELETE)), [("$.processor", "body.missing_field", "error")], "required"),
    ("processor-int", body_with((("processor",), 5)), [("$.processor", "body.wrong_type", "error")], "string"),
    # input against the schema
    ("input-missing", body_with((("input",), DELETE)), [("$.input", "body.missing_field", "error")], "required"),
    ("input-list", body_with((("input",), [1])), [("$.input", "body.wrong_type", "error")], "string or an object"),
    ("input-text", body_with((("input",), "France 2023")), [("$.input", "input.text_with_json_schema", "error")], "JSON object"),
    ("input-year-str", body_with((("input", "year"), "2023")), [("$.input.year", "input.schema_mismatch", "error")], "integer"),
    ("input-missing-prop", body_with((("input",), {"year": 2023})), [("$.input", "input.schema_mismatch", "error")], "'country' is a required property"),
    ("input-extra-prop", body_with((("input", "city"), "Paris")), [("$.input", "input.schema_mismatch", "error")], "additionalProperties"),
    ("input-two-errors", body_with((("input",), {"country": 1, "year": "x"})), [("$.input.country", "input.schema_mismatch", "error"), ("$.input.year", "input.schema_mismatch", "error")], "type"),
    ("input-array-index", body_with((("task_spec", "input_schema", "json_schema"), {"properties": {"tags": {"items": {"type": "string"}}}}), (("input",), {"tags": ["a", "b", "c", 4]})), [("$.input.tags[3]", "input.schema_mismatch", "error")], "string"),
    ("input-local-ref", body_with((("task_spec", "input_schema", "json_schema"), {"$defs": {"y": {"type": "integer"}}, "properties": {"year": {"$ref": "#/$defs/y"}}}), (("input", "year"), "x")), [("$.input.year", "input.schema_mismatch", "error")], "integer"),
    ("input-text-schema", body_with((("task_spec", "input_schema"), {"type": "text", "description": "a country"}), (("input",), "France")), [], ""),
    ("input-bare-string-schema", body_with((("task_spec", "input_schema"), "a country"), (("input",), {"any": "thing"})), [], ""),
    ("input-schema-untyped-json", body_with((("task_spec", "input_schema", "type"), DELETE), (("input",), "text")), [("$.input", "input.text_with_json_schema", "error")], "JSON"),
    ("format-is-annotation", body_with((("task_spec", "input_schema", "json_schema"), {"properties": {"country": {"format": "email"}}})), [], ""),
    # the schemas themselves
    ("input-schema-invalid-no-match", body_with((("task_spec", "input_schema", "json_schema", "properties", "year", "type"), "integr"), (("input", "year"), "x")), [(f"{INPUT_SCHEMA}.properties.year.type", "input_schema.invalid", "error")], "Draft 2020-12"),
    ("input-schema-bad-regex", body_with((("task_spec", "input_schema", "json_schema", "properties", "country", "pattern"), "(")), [(f"{INPUT_SCHEMA}.properties.country.pattern", "input_schema.invalid", "error")], "regex"),
    ("input-schema-not-object", body_with((("task_spec", "input_schema", "json_schema"), [1])), [(INPUT_SCHEMA, "input_schema.invalid", "error")], "object"),
    ("input-schema-auto", body_with((("task_spec", "input_schema"), {"type": "auto"})), [("$.task_spec.input_schema", "input_schema.invalid", "error")], "json, text"),
    ("output-schema-invalid", body_with((("task_spec", "output_schema", "json_schema", "type"), 5)), [("$.task_spec.output_schema.json_schema.type", "output_schema.invalid", "error")], "Draft 2020-12"),
    ("output-schema-json-missing", body_with((("task_spec", "output_schema"), {"type": "json"})), [("$.task_spec.output_schema.json_schema", "output_schema.invalid", "error")], "null"),
    ("output-schema-xml", body_with((("task_spec", "output_schema"), {"type": "xml"})), [("$.task_spec.output_schema", "output_schema.invalid", "error")], "auto"),
    ("output-schema-auto", body_with((("task_spec", "output_schema"), {"type": "auto"})), [], ""),
    ("output-schema-missing", body_with((("task_spec", "output_schema"), DELETE)), [("$.task_spec.output_schema", "body.missing_field", "error")], "required"),
    ("task-spec-null", body_with((("task_spec",), None), (("input",), "text")), [], ""),
    ("task-spec-string", body_with((("task_spec",), "x")), [("$.task_spec", "body.wrong_type", "error")], "object or null"),
    # $ref: never fetched
    ("ref-https", body_with((("task_spec", "input_schema", "json_schema"), {"$ref": "https://example.com/x.json"})), [(f"{INPUT_SCHEMA}['$ref']", "input_schema.ref_unresolvable", "error")], "never fetched"),
    ("ref-file", body_with((("task_spec", "input_schema", "json_schema"), {"$ref": "file:///etc/passwd"})), [(f"{INPUT_SCHEMA}['$ref']", "input_schema.ref_unresolvable", "error")], "never fetched"),
    ("ref-relative-to-file-id", body_with((("task_spec", "input_schema", "json_schema"), {"$id": "file:///etc/", "$ref": "passwd"})), [(f"{INPUT_SCHEMA}['$ref']", "input_schema.ref_unresolvable", "error")], "passwd"),
    ("ref-missing-pointer", body_with((("task_spec", "input_schema", "json_schema"), {"properties": {"year": {"$ref": "#/$defs/nope"}}})), [(f"{INPUT_SCHEMA}.properties.year['$ref']", "input_schema.ref_unresolvable", "error")], "nope"),
    ("ref-cycle", body_with((("task_spec", "input_schema", "json_schema"), {"$ref": "#"})), [(INPUT_SCHEMA, "input_schema.unusable", "error")], "RecursionError"),
    # source policy entries
    ("domain-scheme", body_with((("source_policy", "include_domains", 1), "https://example.com")), [("$.source_policy.include_domains[1]", "source_policy.invalid_entry", "error")], "has a scheme"),
    ("domain-port", body_with((("source_policy", "include_domains", 0), "example.com:8080")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "has a port"),
    ("domain-query", body_with((("source_policy", "exclude_domains", 1), "example.com/search?q=x")), [("$.source_policy.exclude_domains[1]", "source_policy.invalid_entry", "error")], "has a query string"),
    ("domain-fragment", body_with((("source_policy", "exclude_domains", 0), "example.com/page#top")), [("$.source_policy.exclude_domains[0]", "source_policy.invalid_entry", "error")], "has a fragment"),
    ("domain-userinfo", body_with((("source_policy", "include_domains", 2), "user:pw@example.com")), [("$.source_policy.include_domains[2]", "source_policy.invalid_entry", "error")], "has user info"),
    ("domain-whitespace", body_with((("source_policy", "include_domains", 0), "exa mple.com")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "whitespace"),
    ("domain-leading-space", body_with((("source_policy", "include_domains", 0), " example.com")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "whitespace"),
    ("domain-empty", body_with((("source_policy", "include_domains", 0), "")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "empty"),
    ("domain-single-label", body_with((("source_policy", "include_domains", 0), "localhost")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "not a domain"),
    ("domain-wildcard", body_with((("source_policy", "include_domains", 0), "*.example.com")), [("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error")], "not a domain"),
    ("domain-all-parts", body_with((("source_policy", "include_domains"), ["a.com", "b.org", ".gov", "HTTPS://u@ex.com:1/a?b#c"])), [("$.source_policy.include_domains[3]", "source_policy.invalid_entry", "error")], "has a scheme ('HTTPS://'); has user info ('...@'); has a port; has a query string; has a fragment"),
    ("domain-not-string", body_with((("source_policy", "include_domains", 1), 5)), [("$.source_policy.include_domains[1]", "body.wrong_type", "error")], "string"),
    ("domains-not-list", body_with((("source_policy", "exclude_domains"), "reddit.com")), [("$.source_policy.exclude_domains", "body.wrong_type", "error")], "array"),
    ("domains-fine", body_with((("source_policy", "include_domains"), ["sub.example.gov", ".co.uk", "medium.com/@user", "bücher.de", "docs.python.org/3/"])), [], ""),
    ("domains-200", body_with((("source_policy", "include_domains"), [f"d{i}.com" for i in range(150)]), (("source_policy", "exclude_domains"), [f"e{i}.com" for i in range(50)])), [], ""),
    ("domains-201", body_with((("source_policy", "include_domains"), [f"d{i}.com" for i in range(150)]), (("source_policy", "exclude_domains"), [f"e{i}.com" for i in range(51)])), [("$.source_policy", "source_policy.too_many_entries", "error")], "201 domain entries (150 in include_domains, 51 in exclude_domains); the limit is 200"),
    ("domain-overlap", body_with((("source_policy", "exclude_domains"), ["x.com", "Docs.Python.org/3/"])), [("$.source_policy.exclude_domains[1]", "source_policy.included_and_excluded", "warning")], "include_domains[1]"),
    ("policy-list", body_with((("source_policy",), ["x.com"])), [("$.source_policy", "body.wrong_type", "error")], "object"),
    # after_date
    ("date-month-13", body_with((("source_policy", "after_date"), "2024-13-01")), [("$.source_policy.after_date", "source_policy.after_date_invalid", "error")], "YYYY-MM-DD"),
    ("date-feb-30", body_with((("source_policy", "after_date"), "2024-02-30")), [("$.source_policy.after_date", "source_policy.after_date_invalid", "error")], "calendar date"),
    ("date-time", body_with((("source_policy", "after_date"), "2024-01-01T00:00:00Z")), [("$.source_policy.after_date", "source_policy.after_date_invalid", "error")], "YYYY-MM-DD"),
    ("date-basic-format", body_with((("source_policy", "after_date"), "20240101")), [("$.source_policy.after_date", "source_policy.after_date_invalid", "error")], "YYYY-MM-DD"),
    ("date-int", body_with((("source_policy", "after_date"), 20240101)), [("$.source_policy.after_date", "source_policy.after_date_invalid", "error")], "YYYY-MM-DD"),
    ("date-null", body_with((("source_policy", "after_date"), None)), [], ""),
    # memory_scope_key
    ("scope-empty", body_with((("memory_scope_key",), "")), [("$.memory_scope_key", "memory_scope_key.invalid", "error")], "128"),
    ("scope-129", body_with((("memory_scope_key",), "k" * 129)), [("$.memory_scope_key", "memory_scope_key.invalid", "error")], "the limit is 128"),
    ("scope-128", body_with((("memory_scope_key",), "k" * 128)), [], ""),
    ("scope-chars", body_with((("memory_scope_key",), "team research")), [("$.memory_scope_key", "memory_scope_key.invalid", "error")], "[a-zA-Z0-9_-]"),
    ("scope-newline", body_with((("memory_scope_key",), "team\n")), [("$.memory_scope_key", "memory_scope_key.invalid", "error")], "[a-zA-Z0-9_-]"),
    ("scope-int", body_with((("memory_scope_key",), 5)), [("$.memory_scope_key", "body.wrong_type", "error")], "string or null"),
    # newer top-level fields and the body itself
    ("enable-events-str", body_with((("enable_events",), "yes")), [("$.enable_events", "body.wrong_type", "error")], "boolean"),
    ("not-an-object", [], [("$", "body.wrong_type", "error")], "JSON object"),
    ("unknown-fields-kept", body_with((("brand_new_field",), {"x": 1})), [], ""),
]
# fmt: on


@pytest.mark.parametrize(("body", "expected", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(body: Any, expected: list[tuple[str, str, str]], fragment: str) -> None:
    report = check_task_run_input(body)
    assert_well_formed(report)
    assert triples(report) == expected
    if expected:
        assert any(fragment in violation.message for violation in report.violations), report.violations


def _kept_by_the_model(body: Any) -> bool:
    """True when TaskRunInput accepts the body and dumps it back unchanged (no coercion)."""
    try:
        return TaskRunInput.model_validate(body).model_dump(mode="json", exclude_unset=True) == body
    except ValueError:
        return False


TYPED_CASES = [case for case in CASES if _kept_by_the_model(case[1])]


@pytest.mark.parametrize(("body", "expected"), [c[1:3] for c in TYPED_CASES], ids=[c[0] for c in TYPED_CASES])
def test_typed_input_gets_the_same_report(body: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    """A TaskRunInput is checked through its JSON dump: the same findings as its raw body."""
    assert triples(check_task_run_input(TaskRunInput.model_validate(body))) == expected


def test_most_cases_also_run_typed() -> None:
    assert len(TYPED_CASES) >= 50


def test_valid_body_has_no_violations() -> None:
    report = check_task_run_input(VALID)
    assert report.violations == ()
    assert report.verdict == "valid"


@pytest.mark.parametrize("processor", sorted(KNOWN_PROCESSORS))
def test_known_processors_pass(processor: str) -> None:
    assert check_task_run_input(body_with((("processor",), processor))).violations == ()


def test_known_processors_are_the_documented_ones() -> None:
    tiers = ["lite", "base", "core", "core2x", "pro", "ultra", "ultra2x", "ultra4x", "ultra8x"]
    assert {*tiers, *(f"{t}-fast" for t in tiers)} == KNOWN_PROCESSORS


def test_boundaries_pass() -> None:
    body = body_with((("metadata",), {"k" * 16: "v" * 512, "b": False, "i": -(10**511) + 1, "f": -1.5e300}))
    assert check_task_run_input(body).violations == ()


def test_previews_are_shortened_to_80_characters() -> None:
    long_key = "k" * 100
    report = check_task_run_input(body_with((("metadata", long_key), "v" * 1000), (("metadata", "my_key"), "w" * 1000)))
    previews = {(v.path, v.rule): v.preview for v in report.violations}
    assert previews == {
        (f"$.metadata.{long_key}", "metadata.key_too_long"): "k" * 79 + "…",
        (f"$.metadata.{long_key}", "metadata.value_too_long"): "v" * 79 + "…",
        ("$.metadata.my_key", "metadata.value_too_long"): "w" * 79 + "…",
    }


def test_a_lone_surrogate_is_previewed_as_its_escape() -> None:
    body = json.loads('{"processor": "\\ud800x", "input": "q"}')  # json.loads takes the escape; UTF-8 does not
    (violation,) = check_task_run_input(body).violations
    assert (violation.rule, violation.preview) == ("processor.unknown", "\\ud800x")
    violation.model_dump_json()


def test_key_too_long_previews_the_key() -> None:
    (violation,) = check_task_run_input(body_with((("metadata", "customer_reference"), "x"))).violations
    assert violation.preview == "customer_reference"
    assert "18 characters" in violation.message


def test_many_broken_rules_are_reported_at_once() -> None:
    body = body_with(
        (("processor",), "turbo"),
        (("metadata",), {"a_key_longer_than_16": "x", "v": LONG, "n": None}),
        (("memory_scope_key",), "bad key"),
        (
            ("source_policy",),
            {"include_domains": ["https://a.com", "b.com"], "exclude_domains": ["B.com/"], "after_date": "yesterday"},
        ),
        (("input", "year"), "2023"),
        (("task_spec", "output_schema", "json_schema", "required"), "gdp"),
    )
    report = check_task_run_input(body)
    assert_well_formed(report)
    assert triples(report) == [
        ("$.processor", "processor.unknown", "warning"),
        ("$.metadata.a_key_longer_than_16", "metadata.key_too_long", "error"),
        ("$.metadata.v", "metadata.value_too_long", "error"),
        ("$.metadata.n", "metadata.value_type", "error"),
        ("$.memory_scope_key", "memory_scope_key.invalid", "error"),
        ("$.source_policy.include_domains[0]", "source_policy.invalid_entry", "error"),
        ("$.source_policy.exclude_domains[0]", "source_policy.included_and_excluded", "warning"),
        ("$.source_policy.after_date", "source_policy.after_date_invalid", "error"),
        ("$.task_spec.output_schema.json_schema.required", "output_schema.invalid", "error"),
        ("$.input.year", "input.schema_mismatch", "error"),
    ]
    assert report.verdict == "invalid"
    assert len(report.warnings) == 2


def test_warnings_alone_keep_the_input_valid() -> None:
    report = check_task_run_input(body_with((("processor",), "turbo")))
    assert report.valid
    assert report.verdict == "valid_with_warnings"


SPEC_200 = [(label, body) for _, label, status, body in spec_examples() if status == 200]


@pytest.mark.parametrize(("label", "body"), SPEC_200, ids=[label for label, _ in SPEC_200])
def test_spec_examples_are_valid(label: str, body: dict[str, Any]) -> None:
    assert check_task_run_input(body).violations == ()
    assert check_task_run_input(TaskRunInput.model_validate(body)).violations == ()


def test_spec_examples_were_found() -> None:
    assert len(SPEC_200) >= 2


def test_docstring_examples_run() -> None:
    result = doctest.testmod(validation)
    assert result.attempted >= 3
    assert result.failed == 0


@pytest.fixture
def fresh_schema_caches() -> Iterator[None]:
    """Schema verdicts are cached by schema text: a test that changes how schemas are checked starts and
    ends with empty caches, so it neither sees nor leaves a cached verdict."""
    for cache in (_schema_rules._cached_schema_violations, _schema_rules._cached_validator):
        cache.cache_clear()
    yield
    for cache in (_schema_rules._cached_schema_violations, _schema_rules._cached_validator):
        cache.cache_clear()


def test_schema_verdicts_are_cached_by_schema_text(fresh_schema_caches: None) -> None:
    check_task_run_input(VALID)
    check_task_run_input(json.loads(json.dumps(VALID)))
    assert _schema_rules._cached_schema_violations.cache_info().hits >= 2


@pytest.mark.usefixtures("fresh_schema_caches")
def test_unexpected_jsonschema_exception_becomes_a_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Any, instance: Any) -> Iterator[Any]:
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(_schema_bounds.BoundedValidator, "iter_errors", explode)
    report = check_task_run_input(VALID)
    assert [(v.path, v.rule) for v in report.violations] == [
        ("$.task_spec.input_schema.json_schema", "input_schema.unusable"),
        ("$.task_spec.output_schema.json_schema", "output_schema.unusable"),
    ]
    assert all("RuntimeError: boom" in v.message for v in report.violations)


# --- Properties of the metadata rules ---------------------------------------------------------------

keys = st.text(min_size=1, max_size=16)
values = st.one_of(
    st.text(max_size=512),
    st.integers(min_value=-(10**511) + 1, max_value=10**512 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
metadata_within_limits = st.dictionaries(keys, values, max_size=8)


def with_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**VALID, "metadata": metadata}


@FUZZ
@given(metadata_within_limits)
def test_metadata_within_limits_passes(metadata: dict[str, Any]) -> None:
    body = with_metadata(metadata)
    assert check_task_run_input(body).violations == ()
    assert check_task_run_input(TaskRunInput.model_validate(body)).violations == ()


@FUZZ
@given(metadata_within_limits, st.text(min_size=17, max_size=60), values)
def test_a_key_too_long_fails_at_its_path(metadata: dict[str, Any], key: str, value: Any) -> None:
    report = check_task_run_input(with_metadata({**metadata, key: value}))
    (violation,) = report.violations
    assert (violation.rule, violation.severity) == ("metadata.key_too_long", "error")
    assert unescape_metadata_key(violation.path) == key
    assert len(violation.preview) <= 80


@FUZZ
@given(metadata_within_limits, keys, st.text(min_size=513, max_size=700))
def test_a_value_too_long_fails_at_its_path(metadata: dict[str, Any], key: str, value: str) -> None:
    report = check_task_run_input(with_metadata({**metadata, key: value}))
    (violation,) = report.violations
    assert (violation.rule, violation.severity) == ("metadata.value_too_long", "error")
    assert unescape_metadata_key(violation.path) == key
    assert violation.preview == value[:79] + "…"


@FUZZ
@given(st.from_regex(r"[A-Za-z0-9_-]{17,30}", fullmatch=True))
def test_plain_keys_get_a_dotted_path(key: str) -> None:
    (violation,) = check_task_run_input(with_metadata({key: 1})).violations
    assert violation.path == f"$.metadata.{key}"


# --- Fuzz: any JSON in, only Violations out ----------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
KEYWORDS = [
    "type", "properties", "items", "prefixItems", "required", "additionalProperties", "enum", "const", "minimum",
    "maximum", "exclusiveMinimum", "multipleOf", "minLength", "maxLength", "pattern", "patternProperties", "format",
    "$ref", "$defs", "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "allOf", "anyOf", "oneOf", "not", "if",
    "then", "else", "dependentSchemas", "dependentRequired", "propertyNames", "contains", "minContains",
    "unevaluatedProperties", "unevaluatedItems", "minItems", "uniqueItems", "$schema",
]  # fmt: skip
schema_atoms = json_scalars | st.sampled_from(
    ["string", "object", "integer", "number", "array", "null", "#", "#/$defs/a", "a", "^a+$", "(", "email",
     "https://example.com/x.json", "file:///etc/passwd", "https://json-schema.org/draft/2020-12/schema"]
)  # fmt: skip
schemas = st.recursive(
    schema_atoms,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYWORDS) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=25,
)
TOP_FIELDS = ["processor", "input", "metadata", "source_policy", "task_spec", "memory_scope_key", "enable_events"]


@contextlib.contextmanager
def no_io() -> Iterator[list[str]]:
    """Record (and refuse) every attempt to open a file or a connection while the block runs."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[:2]!r}")
            raise OSError(f"I/O during validation: {name}")

        return refused

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse("socket.connect"))
        patch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
        patch.setattr(socket, "create_connection", refuse("socket.create_connection"))
        patch.setattr(urllib.request, "urlopen", refuse("urlopen"))
        patch.setattr(builtins, "open", refuse("open"))
        patch.setattr(io, "open", refuse("io.open"))
        patch.setattr(os, "open", refuse("os.open"))
        yield attempts


def validate_without_io(body: Any) -> ValidationReport:
    with no_io() as attempts:
        report = check_task_run_input(body)
    assert attempts == []
    assert_well_formed(report)
    return report


@FUZZ
@given(json_values)
def test_fuzz_input_against_the_spec_schema(run_input: Any) -> None:
    validate_without_io({**VALID, "input": run_input})


@FUZZ
@given(schemas, json_values)
def test_fuzz_input_schemas(schema: Any, run_input: Any) -> None:
    task_spec = {"output_schema": {"type": "json", "json_schema": schema}, "input_schema": {"json_schema": schema}}
    validate_without_io({"processor": "base", "input": run_input, "task_spec": task_spec})


@FUZZ
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(TOP_FIELDS, json_values)))
def test_fuzz_whole_bodies(body: dict[str, Any]) -> None:
    validate_without_io(body)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "include_domains": st.lists(st.text(max_size=20) | json_scalars, max_size=5),
            "exclude_domains": json_values,
            "after_date": st.text(max_size=12) | json_scalars,
        },
    )
)
def test_fuzz_source_policies(policy: dict[str, Any]) -> None:
    validate_without_io({"processor": "base", "input": "x", "source_policy": policy})


# --- No $ref ever reaches the network or the disk -----------------------------------------------------


@pytest.mark.parametrize("ref", ["https://example.com/x.json", "file:///etc/passwd", "http://127.0.0.1:9/s.json"])
def test_remote_and_file_refs_are_violations_without_io(ref: str) -> None:
    body = body_with((("task_spec", "input_schema", "json_schema"), {"$ref": ref}))
    report = validate_without_io(body)
    assert [(v.path, v.rule, v.preview) for v in report.violations] == [
        (f"{INPUT_SCHEMA}['$ref']", "input_schema.ref_unresolvable", ref)
    ]


def test_the_bundled_meta_schema_resolves_without_io() -> None:
    schema = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    report = validate_without_io(
        body_with((("task_spec", "input_schema", "json_schema"), schema), (("input",), {"type": 5}))
    )
    assert triples(report) == [("$.input.type", "input.schema_mismatch", "error")]


@pytest.mark.parametrize("ref", ["http://127.0.0.1:9/s.json", "file:///etc/passwd"])
def test_the_io_guard_catches_a_validator_that_fetches(ref: str) -> None:
    """The guard is not vacuous: jsonschema's default registry does try to fetch, and gets caught."""
    with warnings.catch_warnings(), no_io() as attempts:
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 - whatever the failed fetch turns into
            Draft202012Validator({"$ref": ref}).validate(1)
    assert attempts
