"""JSON Schema validation that a hostile schema cannot run away with.

A task spec's schema comes from whoever created the run, so checking an input against it must end
soon whatever the schema says:

- patterns (``pattern``, ``patternProperties``, and so ``propertyNames``, ``additionalProperties``
  and ``unevaluatedProperties``) run on RE2, which cannot backtrack: linear in the text, always.
  A pattern RE2 cannot run (a look-around, a back-reference) raises :class:`UnsupportedPattern`;
- ``uniqueItems`` hashes the items (linear) instead of comparing every pair (quadratic);
- every keyword evaluated spends one step of a budget (:func:`budget`), with a deadline checked at
  each step, so ``$ref`` fan-out and other blow-ups stop with :class:`TooExpensive`;
- a nested ``$schema`` does not swap in another validator class without these bounds: the whole
  schema is read as Draft 2020-12, as the meta-schema check reads it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import attrs
import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend

__all__ = ["MAX_SECONDS", "MAX_STEPS", "BoundedValidator", "TooExpensive", "UnsupportedPattern", "budget"]

MAX_STEPS = 100_000
"""Keywords evaluated per check: a few hundred for a usual input; a blow-up reaches it in well under a second."""
MAX_SECONDS = 1.0
"""Wall-clock limit per check, for what a step count misses (a single slow step, a loaded machine)."""


class TooExpensive(Exception):
    """A check used up its budget (steps or time); what it found so far is incomplete."""


class UnsupportedPattern(Exception):
    """A schema pattern that RE2 cannot run (look-around, back-reference...), so it cannot be checked."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"pattern {pattern!r} cannot be run by RE2: {reason}")
        self.pattern, self.reason = pattern, reason


@dataclass
class _Budget:
    steps_left: int
    deadline: float
    limits: str


_BUDGET: ContextVar[_Budget | None] = ContextVar("schema_budget", default=None)


@contextmanager
def budget(steps: int = MAX_STEPS, seconds: float = MAX_SECONDS) -> Iterator[None]:
    """Bound every BoundedValidator call in this block (and in this thread or task) together."""
    limits = f"{steps:,} validation steps or {seconds:g} s"
    token = _BUDGET.set(_Budget(steps, time.monotonic() + seconds, limits))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _spend() -> None:
    current = _BUDGET.get()
    if current is None:
        return
    current.steps_left -= 1
    if current.steps_left % 64 == 0 and (current.steps_left < 0 or time.monotonic() > current.deadline):
        raise TooExpensive(f"stopped after {current.limits}, the limit per check")


def _counted(keyword: Any) -> Any:
    """The keyword function, spending one step of the budget each time it is evaluated."""

    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _spend()
        return keyword(validator, value, instance, schema)

    return counted


# --- Patterns on RE2 ------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # JSON allows lone surrogates; RE2 then sees invalid UTF-8


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported as a violation, not printed on stderr


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    """The RE2 program of a pattern, or the reason RE2 refuses it (as a string, so it is cached too)."""
    try:
        return re2.compile(_utf8(pattern), _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "unsupported syntax"
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def search(pattern: str, text: str) -> bool:
    """``re.search`` semantics, in time linear in the text."""
    compiled = _compiled(pattern)
    if isinstance(compiled, str):
        raise UnsupportedPattern(pattern, compiled)
    return compiled.search(_utf8(text)) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema's own, with its pattern matching on RE2."""
    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = [k for k in instance if k not in properties and not any(search(p, k) for p in patterns)]
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        listed = ", ".join(repr(key) for key in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(
                f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}"
            )
        else:
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {'was' if len(extras) == 1 else 'were'} unexpected)"
            )


def _unevaluated_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema's own, with its pattern matching on RE2."""
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    failed = [
        key
        for key in instance
        if key not in evaluated
        and next(validator.descend(instance[key], extra, path=key, schema_path=key), None) is not None
    ]
    if failed:
        listed = ", ".join(repr(key) for key in sorted(failed, key=str))
        verb = "was" if len(failed) == 1 else "were"
        if extra is False:
            yield ValidationError(f"Unevaluated properties are not allowed ({listed} {verb} unexpected)")
        else:
            yield ValidationError(
                f"Unevaluated properties are not valid under the given schema ({listed} {verb} unevaluated and invalid)"
            )


def _evaluated_keys(validator: Any, instance: Mapping[str, Any], schema: Any) -> set[str]:
    """The keys some keyword of ``schema`` evaluated, as jsonschema's ``unevaluatedProperties`` finds them."""
    if not isinstance(schema, Mapping):
        return set()
    _spend()
    keys: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        if isinstance(ref := schema.get(keyword), str):
            resolved = validator._resolver.lookup(ref)
            evolved = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys |= _evaluated_keys(evolved, instance, resolved.contents)
    if isinstance(properties := schema.get("properties"), Mapping):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys |= {k for k, v in instance.items() if next(validator.descend(v, subschema), None) is None}
    for pattern in schema.get("patternProperties", {}):
        keys |= {k for k in instance if search(pattern, k)}
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if next(validator.descend(instance, subschema), None) is None:
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            keys |= _evaluated_keys(validator, instance, schema.get("then"))
        else:
            keys |= _evaluated_keys(validator, instance, schema.get("else"))
    return keys


# --- uniqueItems by hashing -----------------------------------------------------------------------


def _hashable(value: Any) -> Any:
    """A hashable stand-in equal exactly when JSON Schema calls two values equal (1 == 1.0, True != 1)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, Mapping):
        return ("object", frozenset((key, _hashable(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_hashable(item) for item in value))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    first_seen: dict[Any, int] = {}
    for index, item in enumerate(instance):
        earlier = first_seen.setdefault(_hashable(item), index)
        if earlier != index:
            yield ValidationError(f"has non-unique elements: items {earlier} and {index} are equal")
            return


# --- The validator class --------------------------------------------------------------------------

_REPLACED = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
}
_KEYWORDS = {name: _counted(_REPLACED.get(name, keyword)) for name, keyword in Draft202012Validator.VALIDATORS.items()}

BoundedValidator: Any = extend(Draft202012Validator, validators=_KEYWORDS)  # type: ignore[no-untyped-call]
"""Draft 2020-12, with every keyword counted against :func:`budget` and the bounded keywords above."""


def _evolve_in_class(self: Any, **changes: Any) -> Any:
    """jsonschema's ``evolve``, except that a subschema's ``$schema`` never picks another class."""
    changes.setdefault("schema", self.schema)
    for field in attrs.fields(type(self)):
        if field.init and field.alias not in changes:
            changes[field.alias] = getattr(self, field.name)
    return type(self)(**changes)


BoundedValidator.evolve = _evolve_in_class
