"""Small helpers of the validation rules: JSON paths, previews, lengths as the API counts them, violations."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from parallel_tasks.models import Severity, Violation

PREVIEW_MAX = 80
"""Characters of an offending value shown in a violation (and in the record's tables)."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def json_path(*segments: str | int) -> str:
    """The JSON path of a value: ``$.a.b[3]``, with keys that are not plain quoted: ``$.a['b c']``.

    Example:
        >>> json_path("source_policy", "include_domains", 3), json_path("metadata", "my key")
        ('$.source_policy.include_domains[3]', "$.metadata['my key']")
    """
    parts = ["$"]
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _PLAIN_KEY.fullmatch(key := str(segment)):
            parts.append(f".{key}")
        else:
            escaped = key.replace("\\", "\\\\").replace("'", "\\'")
            parts.append("['" + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + "']")
    return "".join(parts)


def _shorten(text: str, limit: int = PREVIEW_MAX) -> str:
    """Cut text to ``limit`` characters, ellipsis included, so previews fit a table cell."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_text(value: Any) -> str:
    """Compact JSON text of a value, as the API measures it; never raises (cycles, huge integers)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def text_length(value: Any) -> int:
    """Length of a value as text: a string's own length, otherwise its JSON text's."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int) and value.bit_length() > 2000:  # 600+ digits: count them without printing
        return int((value.bit_length() - 1) * math.log10(2)) + 1
    return len(_json_text(value))


def preview(value: Any, limit: int = PREVIEW_MAX) -> str:
    """A value as at most ``limit`` characters: strings as they are, anything else as JSON; a lone surrogate
    (which ``json.loads`` accepts from a ``\\ud800`` escape, and which no UTF-8 sink takes) as its escape."""
    text = value if isinstance(value, str) else _json_text(value)
    return _shorten(text.encode("utf-8", "backslashreplace").decode("utf-8"), limit)


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _violation(path: str, rule: str, message: str, value: Any, severity: Severity = "error") -> Violation:
    return Violation(path=path, rule=rule, severity=severity, message=message, preview=preview(value))


def _wrong_type(path: str, value: Any, expected: str) -> Violation:
    return _violation(path, "body.wrong_type", f"is {_json_type(value)}; expected {expected}", value)


def _mapping(value: Any) -> Mapping[str, Any]:
    """The value if it is an object, else an empty one: rules skip what check_shape already reported."""
    return value if isinstance(value, Mapping) else {}
