"""The retry policy as pure functions: what to retry, how long to wait, when to stop.

Nothing here sleeps or does I/O; the clients call :func:`plan_retry` after each failed attempt and
do the waiting themselves, so every rule is testable with plain values.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Literal

from parallel_tasks.settings import DEFAULT_MAX_RETRIES

__all__ = [
    "FAILURE_RETRYABLE",
    "FINAL_STATUSES",
    "RETRYABLE_STATUSES",
    "STATUS_RETRYABLE",
    "Failure",
    "RetryDecision",
    "RetryPolicy",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
    "plan_retry",
]

Failure = Literal["connection", "timeout", "unreadable_body", "invalid_body", "too_large"]
"""What went wrong when there is no error status: no connection or a broken one, a timeout, a 2xx body that is
not JSON at all (a broken transfer, a proxy's page), one that is JSON but not a run input, one over the size cap."""

STATUS_RETRYABLE: Mapping[int, bool] = MappingProxyType(
    {400: False, 401: False, 402: False, 403: False, 404: False, 422: False, 408: True, 409: True, 429: True}
)
"""The one retryability table for statuses. True: worth retrying. False: final, the same on every retry, so
``x-should-retry: true`` cannot override it. Every other 5xx is worth retrying; any other status is not,
unless the server sends ``x-should-retry: true``."""

FAILURE_RETRYABLE: Mapping[Failure, bool] = MappingProxyType(
    {"connection": True, "timeout": True, "unreadable_body": True, "invalid_body": False, "too_large": False}
)
"""The one retryability table for failures without a status (see :data:`Failure`)."""

RETRYABLE_STATUSES = frozenset(status for status, retry in STATUS_RETRYABLE.items() if retry)
"""Client-error statuses worth retrying (from :data:`STATUS_RETRYABLE`); every 5xx is retryable too."""

FINAL_STATUSES = frozenset(status for status, retry in STATUS_RETRYABLE.items() if not retry)
"""Statuses that never change on a retry (from :data:`STATUS_RETRYABLE`)."""


def is_retryable(status_code: int | None = None, *, failure: Failure | None = None) -> bool:
    """Whether a failed attempt is worth retrying, by its status or, without one, by what went wrong.

    The one place this is decided: the errors' ``retryable`` attribute, :func:`plan_retry` and Prefect's
    task retries (``retry_if_retryable``) all ask it.
    """
    if status_code is not None:
        return STATUS_RETRYABLE.get(status_code, 500 <= status_code <= 599)
    return failure is not None and FAILURE_RETRYABLE[failure]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the client's own retries.

    Attributes:
        max_retries: Extra attempts after the first (so at most ``max_retries + 1`` requests).
        initial_delay: First backoff delay in seconds; it doubles on each retry.
        max_delay: Cap of the backoff delay in seconds.
        max_retry_after: A server-requested wait longer than this stops retrying at once.
        deadline: Overall seconds for one call, attempts and waits included; no retry starts
            if its wait would end past it. ``None`` means only ``max_retries`` bounds the call.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    deadline: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.deadline is not None and not (math.isfinite(self.deadline) and self.deadline > 0):
            raise ValueError(f"deadline must be a finite number > 0 or None, got {self.deadline!r}")


@dataclass(frozen=True)
class RetryDecision:
    """Whether to retry, after how many seconds, and why (for the log). ``server_refused``: the server itself
    said not to retry now (``x-should-retry: false``, or a Retry-After beyond the cap), so no other layer
    should either."""

    retry: bool
    delay: float = 0.0
    reason: str = ""
    server_refused: bool = False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as httpx.Headers."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _finite_seconds(text: str, scale: float = 1.0) -> float | None:
    try:
        value = float(text.strip()) * scale
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait in seconds the server asked for, or ``None`` when it asked for none we can trust.

    ``retry-after-ms`` (milliseconds) wins over ``Retry-After``, which may be seconds (fractions
    allowed) or an HTTP-date; a date in the past means 0. Negative, infinite, NaN and unparsable
    values are ignored.
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        parsed = _finite_seconds(millis, scale=0.001)
        if parsed is not None:
            return parsed
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _finite_seconds(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def backoff_delay(retry_number: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: ``initial * 2**n`` capped at ``max_delay``, minus up to 25%.

    ``retry_number`` is 0 for the first retry. Jitter keeps many clients that failed together
    from retrying together.
    """
    base = min(policy.initial_delay * 2.0 ** min(retry_number, 62), policy.max_delay)
    return base * (1.0 - 0.25 * rand())


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = _header(headers, "x-should-retry")
    if value is None:
        return None
    lowered = value.strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def plan_retry(
    policy: RetryPolicy,
    *,
    retries_done: int,
    elapsed: float,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
    retryable_failure: bool = False,
    rand: Callable[[], float] = random.random,
    now: datetime | None = None,
) -> RetryDecision:
    """Decide whether a failed attempt is retried and how long to wait first.

    Args:
        policy: The bounds.
        retries_done: Retries already made for this call (0 after the first attempt).
        elapsed: Seconds spent on this call so far.
        status_code: The response status, or ``None`` for a transport failure.
        headers: The response headers (Retry-After, x-should-retry).
        retryable_failure: For failures without a status: True for timeouts, connection errors
            and unreadable bodies, which are worth retrying.
        rand: Source of jitter in [0, 1).
        now: The current time, for HTTP-date Retry-After values.
    """
    headers = headers or {}
    if status_code is not None:
        if STATUS_RETRYABLE.get(status_code) is False:  # final: the same answer on every retry
            return RetryDecision(False, reason=f"status {status_code} is final")
        advice = _should_retry_header(headers)
        if advice is False:
            return RetryDecision(False, reason="server sent x-should-retry: false", server_refused=True)
        if not is_retryable(status_code) and advice is not True:
            return RetryDecision(False, reason=f"status {status_code} is not retryable")
    elif not retryable_failure:
        return RetryDecision(False, reason="not a retryable failure")
    if retries_done >= policy.max_retries:
        return RetryDecision(False, reason=f"gave up after {retries_done} retries")
    retry_after = parse_retry_after(headers, now) if status_code is not None else None
    if retry_after is not None and retry_after > policy.max_retry_after:
        reason = f"Retry-After {retry_after:g}s exceeds the {policy.max_retry_after:g}s cap"
        return RetryDecision(False, reason=reason, server_refused=True)
    delay = retry_after if retry_after is not None else backoff_delay(retries_done, policy, rand)
    if policy.deadline is not None and elapsed + delay > policy.deadline:
        return RetryDecision(False, reason=f"waiting {delay:.3g}s would pass the {policy.deadline:g}s deadline")
    return RetryDecision(True, delay=delay, reason=f"status {status_code}" if status_code else "retryable failure")
