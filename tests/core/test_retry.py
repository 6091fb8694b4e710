"""The retry policy, as pure functions: Retry-After forms, backoff bounds, what is retried."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallel_tasks import retry
from parallel_tasks.errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    NotFoundError,
    ResponseTooLargeError,
    ResponseValidationError,
    error_class_for_status,
)
from parallel_tasks.retry import RetryPolicy, backoff_delay, parse_retry_after, plan_retry

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def http_date(delta: timedelta) -> str:
    return format_datetime(NOW + delta, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": " 2 "}, 2.0),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "Infinity"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "1e400"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": http_date(timedelta(seconds=30))}, 30.0),
        ({"Retry-After": http_date(timedelta(seconds=-30))}, 0.0),
        ({"Retry-After": http_date(timedelta(days=400))}, 400 * 86400.0),
        ({"Retry-After": "Fri, 31 Feb 2026 25:61:00 GMT"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "nan", "Retry-After": "9"}, 9.0),
        ({"retry-after-ms": "-5", "Retry-After": "9"}, 9.0),
        ({"retry-after-ms": "garbage"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises_and_is_finite(raw: str) -> None:
    value = parse_retry_after({"Retry-After": raw, "retry-after-ms": raw}, now=NOW)
    assert value is None or (math.isfinite(value) and value >= 0)


def test_backoff_doubles_from_half_a_second_to_the_cap() -> None:
    policy = RetryPolicy()
    no_jitter = [backoff_delay(n, policy, rand=lambda: 0.0) for n in range(7)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    full_jitter = [backoff_delay(n, policy, rand=lambda: 0.999999) for n in range(7)]
    assert all(0.75 * a <= b <= a for a, b in zip(no_jitter, full_jitter, strict=True))
    assert backoff_delay(10_000, policy, rand=lambda: 0.0) == 8.0


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_backoff_stays_within_bounds(retry_number: int, draw: float) -> None:
    delay = backoff_delay(retry_number, RetryPolicy(), rand=lambda: draw)
    assert 0.375 <= delay <= 8.0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    decision = plan_retry(RetryPolicy(), retries_done=0, elapsed=0, status_code=status, rand=lambda: 0.0)
    assert decision.retry and decision.delay == 0.5


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_final_statuses_are_never_retried_even_if_the_server_says_so(status: int) -> None:
    decision = plan_retry(
        RetryPolicy(), retries_done=0, elapsed=0, status_code=status, headers={"x-should-retry": "true"}
    )
    assert not decision.retry and "final" in decision.reason


def test_x_should_retry_header() -> None:
    policy = RetryPolicy()
    assert not plan_retry(policy, retries_done=0, elapsed=0, status_code=503, headers={"x-should-retry": "false"}).retry
    assert plan_retry(policy, retries_done=0, elapsed=0, status_code=418, headers={"X-Should-Retry": "true"}).retry
    assert not plan_retry(policy, retries_done=0, elapsed=0, status_code=418).retry
    assert plan_retry(policy, retries_done=0, elapsed=0, status_code=503, headers={"x-should-retry": "maybe"}).retry


def test_only_the_servers_own_refusal_is_marked_as_such() -> None:
    """What stops the task's retries too: the server's say, not the client's running out of tries."""
    policy = RetryPolicy(max_retries=2, max_retry_after=60)

    def refused(retries_done: int, status: int, headers: dict[str, str] | None = None) -> bool:
        decision = plan_retry(policy, retries_done=retries_done, elapsed=0, status_code=status, headers=headers)
        return not decision.retry and decision.server_refused

    assert refused(0, 503, {"x-should-retry": "false"})
    assert refused(0, 429, {"Retry-After": "3600"})
    assert not refused(2, 503)  # gave up: another layer may try later
    assert not refused(0, 404)  # final, but not the server's say about retrying


def test_transport_failures_are_retried_and_others_not() -> None:
    assert plan_retry(RetryPolicy(), retries_done=0, elapsed=0, retryable_failure=True).retry
    assert not plan_retry(RetryPolicy(), retries_done=0, elapsed=0, retryable_failure=False).retry


def test_max_retries_bounds_the_attempts() -> None:
    policy = RetryPolicy(max_retries=3)
    assert [plan_retry(policy, retries_done=n, elapsed=0, status_code=503).retry for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert not plan_retry(RetryPolicy(max_retries=0), retries_done=0, elapsed=0, status_code=503).retry


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retry_after=60)
    decision = plan_retry(policy, retries_done=0, elapsed=0, status_code=429, headers={"Retry-After": "12"})
    assert decision.retry and decision.delay == 12.0
    decision = plan_retry(policy, retries_done=0, elapsed=0, status_code=429, headers={"Retry-After": "61"})
    assert not decision.retry and "exceeds" in decision.reason
    decision = plan_retry(
        policy,
        retries_done=0,
        elapsed=0,
        status_code=503,
        headers={"Retry-After": http_date(timedelta(hours=1))},
        now=NOW,
    )
    assert not decision.retry


def test_the_deadline_stops_a_retry_whose_wait_would_pass_it() -> None:
    policy = RetryPolicy(deadline=10)
    assert plan_retry(policy, retries_done=0, elapsed=9.0, status_code=503, rand=lambda: 0.0).retry
    decision = plan_retry(policy, retries_done=0, elapsed=9.8, status_code=503, rand=lambda: 0.0)
    assert not decision.retry and "deadline" in decision.reason
    assert plan_retry(RetryPolicy(deadline=None), retries_done=0, elapsed=1e9, status_code=503).retry


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"initial_delay": -0.1},
        {"max_delay": math.inf},
        {"max_retry_after": math.nan},
        {"deadline": 0},
        {"deadline": math.inf},
    ],
)
def test_policy_refuses_unbounded_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 408, 409, 418, 422, 429, 500, 503, 599])
def test_errors_and_the_retry_plan_agree_on_every_status(status: int) -> None:
    error = error_class_for_status(status)("message", status_code=status)
    decision = plan_retry(RetryPolicy(), retries_done=0, elapsed=0, status_code=status, rand=lambda: 0.0)
    assert error.retryable is decision.retry


def test_the_one_table_decides_for_the_errors_and_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "STATUS_RETRYABLE", {404: True, 503: False})
    monkeypatch.setattr(retry, "FAILURE_RETRYABLE", {**retry.FAILURE_RETRYABLE, "connection": False})
    assert NotFoundError("gone", status_code=404).retryable
    assert not InternalServerError("down", status_code=503).retryable
    assert not APIConnectionError("refused").retryable
    assert plan_retry(RetryPolicy(), retries_done=0, elapsed=0, status_code=404).retry
    assert not plan_retry(RetryPolicy(), retries_done=0, elapsed=0, status_code=503).retry


def test_failures_without_a_status() -> None:
    assert APIConnectionError("reset").retryable and APITimeoutError("slow").retryable
    assert ResponseValidationError("<html>", failure="unreadable_body").retryable
    assert not ResponseValidationError("not a run input").retryable
    assert not ResponseTooLargeError("huge").retryable
    restored = pickle.loads(pickle.dumps(ResponseValidationError("<html>", failure="unreadable_body")))
    assert restored.retryable
