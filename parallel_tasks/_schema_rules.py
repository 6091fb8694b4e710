"""The validation rules about JSON schemas: the task spec's schemas are usable, and the input matches its own.

Nothing here does I/O: a ``$ref`` resolves only inside the schema itself (and the bundled meta-schemas), through
a registry that refuses to fetch, and ``format`` stays an annotation. A schema comes from whoever created the
run, so every check against one is bounded (:mod:`parallel_tasks._schema_bounds`). Part of
:data:`parallel_tasks.validation.RULES`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from jsonschema import FormatChecker
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from parallel_tasks._schema_bounds import BoundedValidator, TooExpensive, UnsupportedPattern, budget
from parallel_tasks._violations import _json_type, _mapping, _shorten, _violation, json_path
from parallel_tasks.models import Violation

__all__ = ["check_input", "check_schemas"]

Body = Mapping[str, Any]


def _refuse_retrieval(uri: str) -> Resource[Any]:
    """Never fetch a ``$ref`` (network, file or anything else): an outside schema is unresolvable here."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class mypy cannot see through


# jsonschema adds its bundled meta-schemas to this registry; everything else is refused, never fetched.
_NO_FETCH_REGISTRY: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
# Only "regex" is asserted on schemas (an invalid "pattern" would break matching); other formats stay
# annotations, which keeps the verdict the same whichever optional format libraries are installed.
_META_VALIDATOR = BoundedValidator(
    BoundedValidator.META_SCHEMA, registry=_NO_FETCH_REGISTRY, format_checker=FormatChecker(formats=["regex"])
)


def _schema_kind(value: Any) -> str | None:
    """``json``, ``text`` or ``auto`` the way the spec's anyOf picks them; None when absent; else the odd type."""
    if value is None:
        return None
    if isinstance(value, str):
        return "text"
    if not isinstance(value, Mapping):
        return _json_type(value)
    declared = value.get("type")
    if declared is None:
        return "json" if "json_schema" in value else "text"
    return declared if isinstance(declared, str) else _json_type(declared)


def _unusable(field: str, exc: BaseException) -> Violation:
    """An exception jsonschema raised, as a violation: a report must never crash the flow that asked."""
    message = f"cannot be used by the Draft 2020-12 validator: {type(exc).__name__}: {_shorten(str(exc), 200)}"
    return _violation(json_path("task_spec", field, "json_schema"), f"{field}.unusable", message, "")


def _too_expensive(field: str, exc: TooExpensive) -> Violation:
    """A check that hit its budget: the schema may be hostile, and what it would have found is unknown."""
    message = (
        f"is too expensive to check: {exc}; the input was not fully checked"
        " (nested $ref fan-out, huge uniqueItems arrays and the like)"
    )
    return _violation(json_path("task_spec", field, "json_schema"), f"{field}.too_expensive", message, "")


def _schema_text(schema: Any) -> str | None:
    """A cache key for a schema: its canonical JSON (None when it has none, e.g. mixed key types)."""
    try:
        return json.dumps(schema, sort_keys=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        return None


class _ByText:
    """A schema that hashes and compares by its canonical text, so a cache keyed on the text still
    computes from the object itself (text that dumped near the recursion limit may not load back)."""

    __slots__ = ("schema", "text")

    def __init__(self, schema: Any, text: str) -> None:
        self.schema, self.text = schema, text

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByText) and other.text == self.text


@functools.lru_cache(maxsize=1024)
def _cached_schema_violations(field: str, spec: _ByText) -> tuple[Violation, ...]:
    return tuple(_schema_violations(field, spec.schema))


@functools.lru_cache(maxsize=1024)
def _cached_validator(schema: _ByText) -> Any:
    return _compile(schema.schema)


def _compile(schema: Any) -> Any:
    """A validator for a valid schema; None for one check_schemas reports (matching it would mislead).

    TooExpensive passes through (uncached) for check_input to report."""
    try:
        if not _META_VALIDATOR.is_valid(schema):
            return None
        return BoundedValidator(schema, registry=_NO_FETCH_REGISTRY)
    except TooExpensive:
        raise
    except Exception:
        return None  # check_schemas reports it as unusable


def _schema_violations(field: str, spec: Any) -> list[Violation]:
    """Why one input or output schema is not a usable JSON Schema; empty when it is fine or not JSON."""
    kind = _schema_kind(spec)
    allowed = ("json", "text", "auto") if field == "output_schema" else ("json", "text")
    if kind is not None and kind not in allowed:
        message = f"has type {kind!r}; expected one of {', '.join(allowed)} (or a bare string)"
        return [_violation(json_path("task_spec", field), f"{field}.invalid", message, spec)]
    if kind != "json":
        return []
    schema = _mapping(spec).get("json_schema")
    path = ("task_spec", field, "json_schema")
    if not isinstance(schema, Mapping):
        message = f"is {_json_type(schema)}; a JSON schema must be a JSON Schema object"
        return [_violation(json_path(*path), f"{field}.invalid", message, schema)]
    try:
        with budget():
            errors = list(_META_VALIDATOR.iter_errors(schema))
    except TooExpensive as exc:
        return [_too_expensive(field, exc)]
    except Exception as exc:  # a schema too deep or too odd for the meta-schema: report, never raise
        return [_unusable(field, exc)]
    return [
        _violation(
            json_path(*path, *error.absolute_path),
            f"{field}.invalid",
            f"is not valid JSON Schema (Draft 2020-12, {error.validator}): {_shorten(error.message, 200)}",
            error.instance,
        )
        for error in errors
    ]


def check_schemas(body: Body) -> list[Violation]:
    """Input and output JSON schemas must themselves be valid JSON Schema, or the API cannot use them."""
    task_spec = body.get("task_spec")
    if not isinstance(task_spec, Mapping):
        return []
    found = []
    if "output_schema" not in task_spec:
        found.append(_violation("$.task_spec.output_schema", "body.missing_field", "is missing; it is required", ""))
    # Checking a schema against the meta-schema costs milliseconds, and audits see the same task specs
    # over and over: the verdict is cached by the schema's canonical text.
    for field in ("input_schema", "output_schema"):
        spec = task_spec.get(field)
        text = _schema_text(spec)
        found += (
            _cached_schema_violations(field, _ByText(spec, text))
            if text is not None
            else _schema_violations(field, spec)
        )
    return found


def _find_ref(schema: Any, ref: str) -> tuple[tuple[str | int, ...], str]:
    """Where the unresolvable ``$ref``/``$dynamicRef`` is written, and its text; the root if not found.

    jsonschema reports the resolved target (``/$defs/x`` for ``#/$defs/x``), so match on the ending.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(schema, ())]
    while stack and ref:
        node, path = stack.pop()
        if isinstance(node, Mapping):
            for key in ("$ref", "$dynamicRef"):
                if isinstance(node.get(key), str) and node[key].endswith(ref):
                    return (*path, key), node[key]
            stack.extend((value, (*path, str(key))) for key, value in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend((value, (*path, index)) for index, value in reversed(list(enumerate(node))))
    return (), ref


def check_input(body: Body) -> list[Violation]:
    """The input must match a JSON input schema (Draft 2020-12), as the API checks it before the run starts."""
    input_schema = _mapping(body.get("task_spec")).get("input_schema")
    if _schema_kind(input_schema) != "json":
        return []
    run_input = body.get("input")
    if isinstance(run_input, str):
        message = "is text, but task_spec.input_schema is a JSON schema: the input must be a JSON object"
        return [_violation("$.input", "input.text_with_json_schema", message, run_input)]
    schema = _mapping(input_schema).get("json_schema")
    if not isinstance(run_input, Mapping) or not isinstance(schema, Mapping):
        return []
    text = _schema_text(schema)
    found: list[Violation] = []
    try:
        with budget():
            validator = _cached_validator(_ByText(schema, text)) if text is not None else _compile(schema)
            for error in validator.iter_errors(run_input) if validator is not None else ():
                message = f"does not match the input schema ({error.validator}): {_shorten(error.message, 200)}"
                path = json_path("input", *error.absolute_path)
                found.append(_violation(path, "input.schema_mismatch", message, error.instance))
    except TooExpensive as exc:
        found.append(_too_expensive("input_schema", exc))
    except UnsupportedPattern as exc:
        message = f"cannot be checked: {_shorten(str(exc), 200)}; RE2 keeps pattern matching linear in time"
        found.append(
            _violation(
                json_path("task_spec", "input_schema", "json_schema"),
                "input_schema.pattern_unsupported",
                message,
                exc.pattern,
            )
        )
    except Unresolvable as exc:
        where, ref = _find_ref(schema, str(getattr(exc, "ref", "")))
        message = (
            f"has a $ref that does not resolve inside the schema ({_shorten(str(exc), 200)});"
            " refs are never fetched, from the network or from files"
        )
        path = json_path("task_spec", "input_schema", "json_schema", *where)
        found.append(_violation(path, "input_schema.ref_unresolvable", message, ref))
    except Exception as exc:  # e.g. a $ref cycle (RecursionError): a violation, never a crash
        found.append(_unusable("input_schema", exc))
    return found
