"""Validation of a task run input: every broken rule at once, each at its JSON path.

Each rule is a small pure function over the JSON body, ``check_*(body) -> list[Violation]``, and
``check_task_run_input`` runs them all. Nothing here does I/O: a JSON Schema ``$ref`` resolves only
inside the schema itself (and the bundled meta-schemas), through a registry that refuses to fetch, and
``format`` stays an annotation, as Draft 2020-12 says, so no format check can reach out either.

The rules about JSON schemas live in :mod:`parallel_tasks._schema_rules`. A schema comes from whoever
created the run, so every check against one is bounded (see :mod:`parallel_tasks._schema_bounds`):
patterns run on RE2, each check has a budget of steps and time, and a report lists at most
``MAX_VIOLATIONS`` violations, then how many more there were.
Run it off an event loop with :func:`acheck_task_run_input`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from parallel_tasks._schema_rules import check_input, check_schemas
from parallel_tasks._violations import (
    PREVIEW_MAX,
    _json_type,
    _mapping,
    _shorten,
    _violation,
    _wrong_type,
    json_path,
    preview,
    text_length,
)
from parallel_tasks.models import Severity, TaskRunInput, ValidationReport, Violation

__all__ = [
    "KNOWN_PROCESSORS",
    "MAX_VIOLATIONS",
    "PREVIEW_MAX",
    "RULES",
    "acheck_task_run_input",
    "check_after_date",
    "check_domain_count",
    "check_domain_entries",
    "check_domain_overlap",
    "check_input",
    "check_memory_scope_key",
    "check_metadata",
    "check_processor",
    "check_schemas",
    "check_shape",
    "check_task_run_input",
    "json_path",
    "preview",
    "text_length",
]

KNOWN_PROCESSORS: frozenset[str] = frozenset(
    name + suffix
    for name in ("lite", "base", "core", "core2x", "pro", "ultra", "ultra2x", "ultra4x", "ultra8x")
    for suffix in ("", "-fast")
)
"""Processor names the Task API documents; anything else is worth a warning, not an error."""

METADATA_KEY_MAX = 16
METADATA_VALUE_MAX = 512
DOMAIN_ENTRIES_MAX = 200
MEMORY_SCOPE_KEY_MAX = 128
MAX_VIOLATIONS = 100
"""Violations listed per run; past it one ``validation.too_many_violations`` gives the count of the rest."""
OFF_LOOP_TIMEOUT = 10.0
"""Seconds :func:`acheck_task_run_input` waits for a worker thread: a backstop behind the per-check budgets."""

Body = Mapping[str, Any]
Rule = Callable[[Body], list[Violation]]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")
_LABEL = re.compile(r"(?!-)[\w-]+(?<!-)")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MEMORY_SCOPE_KEY = re.compile(r"[a-zA-Z0-9_-]+")


# --- Shape of the body ----------------------------------------------------------------------------

_FIELDS: dict[str, tuple[tuple[type, ...], str, bool]] = {
    "processor": ((str,), "a string", True),
    "input": ((str, Mapping), "a string or an object", True),
    "metadata": ((Mapping, type(None)), "an object or null", False),
    "source_policy": ((Mapping, type(None)), "an object or null", False),
    "task_spec": ((Mapping, type(None)), "an object or null", False),
    "memory_scope_key": ((str, type(None)), "a string or null", False),
    "previous_interaction_id": ((str, type(None)), "a string or null", False),
    "advanced_settings": ((Mapping, type(None)), "an object or null", False),
    "mcp_servers": ((list, tuple, type(None)), "an array or null", False),
    "enable_events": ((bool, type(None)), "a boolean or null", False),
    "webhook": ((Mapping, type(None)), "an object or null", False),
}


def check_shape(body: Body) -> list[Violation]:
    """Required fields present and top-level fields of the spec's types, so the other rules can trust them."""
    found = []
    for field, (types, expected, required) in _FIELDS.items():
        if field not in body:
            if required:
                found.append(_violation(json_path(field), "body.missing_field", "is missing; it is required", ""))
        elif not isinstance(body[field], types):
            found.append(_wrong_type(json_path(field), body[field], expected))
    return found


def check_processor(body: Body) -> list[Violation]:
    """An unknown processor may be a typo or a new tier: worth a warning, not a rejection."""
    processor = body.get("processor")
    if not isinstance(processor, str) or processor in KNOWN_PROCESSORS:
        return []
    known = ", ".join(sorted(KNOWN_PROCESSORS))
    return [_violation("$.processor", "processor.unknown", f"is not a known processor ({known})", processor, "warning")]


# --- Metadata -------------------------------------------------------------------------------------


def check_metadata(body: Body) -> list[Violation]:
    """Keys 1..16 characters; values str, int, float or bool of at most 512 characters: the API's limits."""
    found = []
    for key, value in _mapping(body.get("metadata")).items():
        path = json_path("metadata", str(key))
        found += _check_metadata_key(path, key)
        found += _check_metadata_value(path, value)
    return found


def _check_metadata_key(path: str, key: Any) -> list[Violation]:
    """A key must be a string of 1..16 characters."""
    if not isinstance(key, str):
        return [_wrong_type(path, key, "a string key")]
    if not key:
        message = f"is an empty key; keys need 1 to {METADATA_KEY_MAX} characters"
        return [_violation(path, "metadata.key_empty", message, key)]
    if len(key) > METADATA_KEY_MAX:
        message = f"key is {len(key)} characters long; the limit is {METADATA_KEY_MAX}"
        return [_violation(path, "metadata.key_too_long", message, key)]
    return []


def _check_metadata_value(path: str, value: Any) -> list[Violation]:
    """A value must be a JSON scalar (not null) and at most 512 characters as text; both are checked."""
    found = []
    if not isinstance(value, (str, int, float)):  # bool is an int: allowed, as the spec says
        message = f"is {_json_type(value)}; metadata values must be a string, integer, number or boolean"
        found.append(_violation(path, "metadata.value_type", message, value))
    elif isinstance(value, float) and not math.isfinite(value):
        message = "is not a finite number (JSON has no NaN or Infinity); metadata values must be finite"
        found.append(_violation(path, "metadata.value_type", message, value))
    length = text_length(value)
    if length > METADATA_VALUE_MAX:
        what = "value" if isinstance(value, str) else "value's JSON text"
        message = f"{what} is {length} characters long; the limit is {METADATA_VALUE_MAX}"
        found.append(_violation(path, "metadata.value_too_long", message, value))
    return found


def check_memory_scope_key(body: Body) -> list[Violation]:
    """``memory_scope_key`` is 1..128 characters of [a-zA-Z0-9_-] (openapi-current.json); the API rejects others."""
    key = body.get("memory_scope_key")
    if not isinstance(key, str):
        return []
    problems = []
    if not key:
        problems.append(f"is empty; it needs 1 to {MEMORY_SCOPE_KEY_MAX} characters")
    elif len(key) > MEMORY_SCOPE_KEY_MAX:
        problems.append(f"is {len(key)} characters long; the limit is {MEMORY_SCOPE_KEY_MAX}")
    if key and not _MEMORY_SCOPE_KEY.fullmatch(key):
        problems.append("has characters outside [a-zA-Z0-9_-]")
    return [_violation("$.memory_scope_key", "memory_scope_key.invalid", "; ".join(problems), key)] if problems else []


# --- Source policy --------------------------------------------------------------------------------

_DOMAIN_FIELDS = ("include_domains", "exclude_domains")
_ENTRY_HINT = (
    "entries are plain domains (example.com), bare extensions (.gov) or domain/path prefixes (docs.python.org/3)"
)


def _domain_lists(body: Body) -> dict[str, list[Any]]:
    """The include/exclude lists that are lists; a wrong type is check_domain_entries' to report."""
    policy = _mapping(body.get("source_policy"))
    return {field: list(policy[field]) for field in _DOMAIN_FIELDS if isinstance(policy.get(field), (list, tuple))}


def _entry_problems(entry: str) -> list[str]:
    """What is wrong with one domain entry, in words; empty when it is fine."""
    if not entry.strip():
        return ["is empty"]
    problems = ["contains whitespace"] if any(ch.isspace() for ch in entry) else []
    rest = entry
    if scheme := _SCHEME.match(rest):
        problems.append(f"has a scheme ({scheme.group()!r})")
        rest = rest[scheme.end() :]
    elif rest.startswith("//"):
        problems.append("has a scheme-relative '//' prefix")
        rest = rest[2:]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    tail = rest[len(authority) :]
    if "@" in authority:
        problems.append("has user info ('...@')")
        authority = authority.rsplit("@", 1)[1]
    host, colon, _ = authority.partition(":")
    if colon:
        problems.append("has a port")
    if "?" in tail:
        problems.append("has a query string")
    if "#" in tail:
        problems.append("has a fragment")
    if host.startswith(".") and tail.strip("/"):
        problems.append("is a bare extension followed by a path")
    if not problems and not _is_domain(host):
        problems.append("is not a domain name")
    return problems


def _is_domain(host: str) -> bool:
    """``example.com``/``sub.example.gov`` (two labels or more) or a bare extension ``.gov``/``.co.uk``."""
    labels = host[1:].split(".") if host.startswith(".") else host.split(".")
    return (host.startswith(".") or len(labels) >= 2) and all(_LABEL.fullmatch(label) for label in labels)


def check_domain_entries(body: Body) -> list[Violation]:
    """Each include/exclude entry is a domain, a bare extension or a domain/path prefix, as the API accepts."""
    policy = _mapping(body.get("source_policy"))
    found = []
    for field in _DOMAIN_FIELDS:
        entries = policy.get(field)
        if entries is None:
            continue
        if not isinstance(entries, (list, tuple)):
            found.append(_wrong_type(json_path("source_policy", field), entries, "an array of strings"))
            continue
        for index, entry in enumerate(entries):
            path = json_path("source_policy", field, index)
            if not isinstance(entry, str):
                found.append(_wrong_type(path, entry, "a string"))
            elif problems := _entry_problems(entry):
                message = f"{'; '.join(problems)}: {_ENTRY_HINT}, without scheme, port, query, fragment or user info"
                found.append(_violation(path, "source_policy.invalid_entry", message, entry))
    return found


def check_domain_count(body: Body) -> list[Violation]:
    """The API takes at most 200 include and exclude entries combined."""
    lists = _domain_lists(body)
    counts = {field: len(entries) for field, entries in lists.items()}
    total = sum(counts.values())
    if total <= DOMAIN_ENTRIES_MAX:
        return []
    detail = ", ".join(f"{count} in {field}" for field, count in counts.items())
    message = f"has {total} domain entries ({detail}); the limit is {DOMAIN_ENTRIES_MAX} combined"
    return [_violation("$.source_policy", "source_policy.too_many_entries", message, body.get("source_policy"))]


def _domain_key(entry: str) -> str:
    """How two entries compare for the overlap warning: case-insensitively, trailing slash ignored."""
    return entry.lower().rstrip("/")


def check_domain_overlap(body: Body) -> list[Violation]:
    """A domain both included and excluded is likely a mistake: with includes present, the API ignores excludes."""
    lists = _domain_lists(body)
    included: dict[str, int] = {}
    for index, entry in enumerate(lists.get("include_domains", [])):
        if isinstance(entry, str) and _domain_key(entry):
            included.setdefault(_domain_key(entry), index)
    found = []
    for index, entry in enumerate(lists.get("exclude_domains", [])):
        if isinstance(entry, str) and _domain_key(entry) in included:
            message = (
                f"{_shorten(entry)!r} is both excluded and included (include_domains[{included[_domain_key(entry)]}]);"
                " when include_domains is non-empty the API ignores exclude_domains"
            )
            path = json_path("source_policy", "exclude_domains", index)
            found.append(_violation(path, "source_policy.included_and_excluded", message, entry, "warning"))
    return found


def check_after_date(body: Body) -> list[Violation]:
    """``after_date`` (openapi-current.json) is an RFC 3339 full date, YYYY-MM-DD, and a real one."""
    value = _mapping(body.get("source_policy")).get("after_date")
    if value is None:
        return []
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            dt.date.fromisoformat(value)
            return []
        except ValueError:
            message = "is not a calendar date; expected an RFC 3339 date YYYY-MM-DD, e.g. 2024-01-01"
    else:
        message = "is not an RFC 3339 date; expected YYYY-MM-DD, e.g. 2024-01-01"
    return [_violation("$.source_policy.after_date", "source_policy.after_date_invalid", message, value)]


# --- All of it ------------------------------------------------------------------------------------

RULES: tuple[Rule, ...] = (
    check_shape,
    check_processor,
    check_metadata,
    check_memory_scope_key,
    check_domain_entries,
    check_domain_count,
    check_domain_overlap,
    check_after_date,
    check_schemas,
    check_input,
)
"""Every rule, in the order their violations are reported."""


def check_task_run_input(run_input: TaskRunInput | Mapping[str, Any]) -> ValidationReport:
    """Check a run input against every rule and report all violations at once.

    A raw mapping is checked as it is, so a body the model would refuse (a null metadata value, say)
    still gets a report rather than an exception. This function never raises for any JSON body.

    Args:
        run_input: The typed input, or the raw JSON body of ``GET /v1/tasks/runs/{run_id}/input``.

    Returns:
        A ValidationReport with every violation, in rule order, each with its JSON path.

    Example:
        >>> report = check_task_run_input(
        ...     {"processor": "base", "input": "GDP of France?", "metadata": {"customer_reference": "x", "ok": None}}
        ... )
        >>> for violation in report.violations:
        ...     print(violation.path, violation.rule, violation.severity)
        $.metadata.customer_reference metadata.key_too_long error
        $.metadata.ok metadata.value_type error
        >>> report.verdict
        'invalid'
        >>> check_task_run_input(TaskRunInput(processor="base", input="GDP of France?")).verdict
        'valid'
    """
    body: Any = (
        run_input.model_dump(mode="json", exclude_unset=True) if isinstance(run_input, TaskRunInput) else run_input
    )
    if not isinstance(body, Mapping):
        return ValidationReport(violations=(_wrong_type("$", body, "a JSON object"),))
    return ValidationReport(violations=_capped([violation for rule in RULES for violation in rule(body)]))


def _capped(violations: list[Violation]) -> tuple[Violation, ...]:
    """The first MAX_VIOLATIONS (plus any too_expensive one), then one violation counting the rest."""
    if len(violations) <= MAX_VIOLATIONS:
        return tuple(violations)
    kept = violations[:MAX_VIOLATIONS] + [v for v in violations[MAX_VIOLATIONS:] if v.rule.endswith(".too_expensive")]
    omitted = [v for v in violations[MAX_VIOLATIONS:] if not v.rule.endswith(".too_expensive")]
    severity: Severity = "error" if any(v.severity == "error" for v in omitted) else "warning"
    message = f"{len(omitted)} more violations are not listed (at most {MAX_VIOLATIONS} per run)"
    return (*kept, _violation("$", "validation.too_many_violations", message, "", severity))


async def acheck_task_run_input(run_input: TaskRunInput | Mapping[str, Any]) -> ValidationReport:
    """:func:`check_task_run_input` in a worker thread, so a costly schema never stalls the event loop.

    The per-check budgets end a costly check; if the thread still has not answered after
    OFF_LOOP_TIMEOUT seconds, the report says so (a thread cannot be stopped, only left behind).
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(check_task_run_input, run_input), OFF_LOOP_TIMEOUT)
    except asyncio.TimeoutError:
        message = f"validation did not finish within {OFF_LOOP_TIMEOUT:g} s; the input was not checked"
        return ValidationReport(violations=(_violation("$", "validation.too_expensive", message, ""),))
