"""Limits the clients enforce: the overall deadline while headers trickle in, numbers and documents past
what JSON parsing can hold, and the bounds of timeouts and concurrency given at creation."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from parallel_tasks import AsyncParallelClient, ParallelClient
from parallel_tasks.client import MAX_CONCURRENCY
from parallel_tasks.errors import APITimeoutError, ResponseValidationError
from parallel_tasks.retry import RetryPolicy

RUN_ID = "trun_11111111111111111111111111111111"
BODY = json.dumps({"run_id": RUN_ID, "input": "hello", "processor": "core"}).encode()


@contextmanager
def trickling_server(interval_s: float, trickled_bytes: int) -> Iterator[tuple[str, threading.Event]]:
    """A server on 127.0.0.1 that sends its response headers one byte every ``interval_s``; after
    ``trickled_bytes`` it hangs up. Yields its URL and an event set when the client hung up first."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop, client_hung_up = threading.Event(), threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * trickled_bytes
            try:
                for byte in head:
                    if stop.wait(interval_s):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:  # the client hung up
                client_hung_up.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", client_hung_up
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)


@pytest.mark.timeout(60)
def test_sync_client_stops_at_its_deadline_while_headers_trickle_in() -> None:
    # 500 bytes at 20 ms each: about 10 s of headers, each byte well within the 2 s read timeout.
    with (
        trickling_server(interval_s=0.02, trickled_bytes=500) as (base_url, client_hung_up),
        ParallelClient(
            "key", base_url=base_url, read_timeout=2, retry_policy=RetryPolicy(max_retries=2, deadline=0.5)
        ) as client,
    ):
        result = client.fetch(RUN_ID)
        assert client_hung_up.wait(timeout=30)  # it gave up while the server was still sending
    assert isinstance(result.error, APITimeoutError), result
    assert "0.5s deadline passed" in str(result.error)
    assert result.attempts == 1  # no retry starts past the deadline


def _counting_client(body: bytes) -> tuple[ParallelClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    policy = RetryPolicy(max_retries=3, initial_delay=0, max_delay=0)
    client = ParallelClient(
        "key", base_url="http://127.0.0.1", transport=httpx.MockTransport(handler), retry_policy=policy
    )
    return client, seen


def _body_with_input(raw_input: str) -> bytes:
    return f'{{"run_id": "{RUN_ID}", "processor": "core", "input": {raw_input}}}'.encode()


@pytest.mark.parametrize("padding", [0, 70_000], ids=["small-body", "large-body"])  # the search differs past 64 KiB
@pytest.mark.parametrize(
    "number", ["1e400", "-1E+400", "2e308", "1" * 400 + ".5", "9" * 299 + "e10", "9" * 210 + "e99"]
)
def test_a_number_that_overflows_a_float_is_refused_not_stored_as_null(number: str, padding: int) -> None:
    pad = "12345 " * (padding // 6)
    client, seen = _counting_client(_body_with_input(f'{{"pad": "{pad}", "amount": {number}, "nested": [1.5]}}'))
    result = client.fetch(RUN_ID)
    assert isinstance(result.error, ResponseValidationError)
    assert "too large for a 64-bit float" in str(result.error)
    assert not result.error.retryable and len(seen) == 1


def test_large_but_finite_numbers_and_exponents_in_strings_are_kept() -> None:
    client, _ = _counting_client(
        _body_with_input('{"big": 1e308, "tiny": 1e-300, "text": "1e400", "n": 1' + "0" * 400 + "}")
    )
    run_input = client.get_task_run_input(RUN_ID)
    assert run_input.input == {"big": 1e308, "tiny": 1e-300, "text": "1e400", "n": 10**400}


@pytest.mark.parametrize(
    ("raw_input", "says"),
    [
        ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested deeper than the parser allows"),
        ('{"a": ' + "7" * 4400 + "}", "more digits than the parser allows"),
    ],
    ids=["nested-10000-deep", "integer-4400-digits"],
)
def test_a_body_past_the_parsers_limits_says_so_and_is_not_fetched_again(raw_input: str, says: str) -> None:
    client, seen = _counting_client(_body_with_input(raw_input))
    result = client.fetch(RUN_ID)
    assert isinstance(result.error, ResponseValidationError)
    assert says in str(result.error) and "not valid JSON" not in str(result.error)
    assert not result.error.retryable and result.attempts == 1 and len(seen) == 1


def test_a_truncated_body_is_still_retried() -> None:
    client, seen = _counting_client(BODY[:-5])
    result = client.fetch(RUN_ID)
    assert "not valid JSON" in str(result.error) and len(seen) == 4


@pytest.mark.parametrize("client_class", [ParallelClient, AsyncParallelClient])
@pytest.mark.parametrize("option", ["connect_timeout", "read_timeout"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_unusable_timeouts_are_refused_at_creation(client_class: type, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a finite number of seconds > 0"):
        client_class("key", base_url="http://127.0.0.1", **{option: value})


def test_batch_concurrency_is_capped() -> None:
    async def fetch_all(concurrency: int) -> None:
        async with AsyncParallelClient("key", base_url="http://127.0.0.1") as client:
            await client.get_task_run_inputs([RUN_ID], concurrency=concurrency)

    with pytest.raises(ValueError, match=f"between 1 and {MAX_CONCURRENCY}, got 1000000"):
        asyncio.run(fetch_all(10**6))
