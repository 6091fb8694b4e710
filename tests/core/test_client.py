"""The HTTP clients against a mocked API (respx): statuses, retries, bodies, limits and run-id safety."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_tasks import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncParallelClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    InvalidRunIdError,
    NotFoundError,
    ParallelClient,
    ParallelError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ResponseValidationError,
    RetryPolicy,
    TaskRunInput,
    UnprocessableEntityError,
)
from parallel_tasks._logging import LOGGER_NAME
from parallel_tasks.client import USER_AGENT, run_input_path, validate_base_url, validate_run_id
from tests.conftest import spec_examples

BASE = "https://api.parallel.ai"
RUN = "trun_0123456789abcdef0123456789abcdef"
URL = f"{BASE}/v1/tasks/runs/{RUN}/input"
KEY = "test-key-abcdef123456"
GOOD_BODY = next(body for _, _, status, body in spec_examples() if status == 200)
FAST = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002)


E = TypeVar("E", bound=BaseException)


def raised(cls: type[E], call: Any, *args: Any) -> E:
    """The exception ``call(*args)`` raised, checked to be a ``cls``."""
    with pytest.raises(cls) as caught:
        call(*args)
    return caught.value


def envelope(message: str, ref_id: str = "ref-1", **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"ref_id": ref_id, "message": message, **extra}}


@pytest.fixture
def router() -> Iterator[respx.Router]:
    router = respx.Router(assert_all_called=False)
    yield router


@pytest.fixture
def client(router: respx.Router) -> Iterator[ParallelClient]:
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler), retry_policy=FAST) as client:
        client.sleeps = []  # type: ignore[attr-defined]
        client._sleep = client.sleeps.append  # type: ignore[attr-defined]
        yield client


def test_success_sends_key_user_agent_and_parses(router: respx.Router, client: ParallelClient) -> None:
    route = router.get(URL).respond(200, json=GOOD_BODY)
    run_input = client.get_task_run_input(RUN)
    assert isinstance(run_input, TaskRunInput)
    assert run_input.model_dump(mode="json", exclude_unset=True) == GOOD_BODY
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["user-agent"] == USER_AGENT
    assert sent.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("status", "cls", "reason"),
    [
        (400, BadRequestError, "Bad Request"),
        (401, AuthenticationError, "Unauthorized"),
        (402, PaymentRequiredError, "Payment Required"),
        (403, PermissionDeniedError, "Forbidden"),
        (404, NotFoundError, "Not Found"),
        (422, UnprocessableEntityError, "Unprocessable Entity"),
    ],
)
def test_final_statuses_raise_their_class_after_one_request(
    router: respx.Router, client: ParallelClient, status: int, cls: type[APIStatusError], reason: str
) -> None:
    route = router.get(URL).respond(status, json=envelope("Run id not found", detail={"why": "gone"}))
    with pytest.raises(cls) as caught:
        client.get_task_run_input(RUN)
    error = caught.value
    assert route.call_count == 1 and client.sleeps == []  # type: ignore[attr-defined]
    assert str(error) == f"{status} {reason} for run '{RUN}': Run id not found (ref_id ref-1)"
    assert (error.status_code, error.ref_id, error.run_id, error.detail) == (status, "ref-1", RUN, {"why": "gone"})
    assert error.retryable is False


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (408, RequestTimeoutError),
        (409, ConflictError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (504, InternalServerError),
    ],
)
def test_retryable_statuses_are_retried_to_the_bound(
    router: respx.Router, client: ParallelClient, status: int, cls: type[APIStatusError]
) -> None:
    route = router.get(URL).respond(status, json=envelope("busy"))
    with pytest.raises(cls) as caught:
        client.get_task_run_input(RUN)
    assert route.call_count == 4  # the first attempt and max_retries=3
    assert len(client.sleeps) == 3  # type: ignore[attr-defined]
    assert caught.value.retryable is True
    assert str(caught.value).startswith(f"{status} ")


def test_retry_then_success(router: respx.Router, client: ParallelClient) -> None:
    router.get(URL).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(502, text="<html><title>Bad gateway</title></html>"),
            httpx.Response(200, json=GOOD_BODY),
        ]
    )
    result = client.fetch(RUN)
    assert result.ok and result.attempts == 3
    assert client.sleeps == [pytest.approx(0.001, rel=0.3), pytest.approx(0.002, rel=0.3)]  # type: ignore[attr-defined]


def test_retry_after_is_honoured(router: respx.Router, client: ParallelClient) -> None:
    router.get(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json=envelope("slow down")),
            httpx.Response(503, headers={"retry-after-ms": "1500"}),
            httpx.Response(200, json=GOOD_BODY),
        ]
    )
    assert client.get_task_run_input(RUN).processor == "core"
    assert client.sleeps == [2.0, 1.5]  # type: ignore[attr-defined]


def test_retry_after_beyond_the_cap_raises_at_once_with_retry_after(
    router: respx.Router, client: ParallelClient
) -> None:
    route = router.get(URL).respond(429, headers={"Retry-After": "3600"}, json=envelope("quota"))
    with pytest.raises(RateLimitError) as caught:
        client.get_task_run_input(RUN)
    assert caught.value.retry_after == 3600.0
    assert route.call_count == 1


def test_x_should_retry_false_stops_retries(router: respx.Router, client: ParallelClient) -> None:
    route = router.get(URL).respond(503, headers={"x-should-retry": "false"})
    with pytest.raises(InternalServerError):
        client.get_task_run_input(RUN)
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("side_effect", "cls", "words"),
    [
        (httpx.ReadTimeout("timed out"), APITimeoutError, "timed out"),
        (httpx.ConnectTimeout("timed out"), APITimeoutError, "timed out"),
        (httpx.ConnectError("refused"), APIConnectionError, "connection failed"),
        (httpx.RemoteProtocolError("peer closed connection"), APIConnectionError, "connection failed"),
    ],
)
def test_transport_failures_are_retried_then_raised(
    router: respx.Router, client: ParallelClient, side_effect: Exception, cls: type[Exception], words: str
) -> None:
    route = router.get(URL).mock(side_effect=side_effect)
    with pytest.raises(cls) as caught:
        client.get_task_run_input(RUN)
    assert route.call_count == 4
    assert words in str(caught.value) and RUN in str(caught.value) and f"at {BASE}" in str(caught.value)
    assert caught.value.attempts == 4  # what Prefect's task retries look at, so as not to retry it again
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_error_envelope_without_type_and_bare_message(router: respx.Router, client: ParallelClient) -> None:
    router.get(URL).mock(
        side_effect=[
            httpx.Response(404, json={"error": {"ref_id": "r2", "message": "Run id not found"}}),
            httpx.Response(404, json={"message": "no such run"}),
            httpx.Response(404, json={"error": {"message": 7}}),
        ]
    )
    first = raised(NotFoundError, client.get_task_run_input, RUN)
    assert (first.ref_id, first.message) == ("r2", "Run id not found")
    assert raised(NotFoundError, client.get_task_run_input, RUN).message == "no such run"
    assert '"message": 7' in raised(NotFoundError, client.get_task_run_input, RUN).message


def test_html_error_page_from_a_proxy(router: respx.Router, client: ParallelClient) -> None:
    html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    router.get(URL).respond(502, text=html, headers={"content-type": "text/html"})
    error = raised(InternalServerError, client.get_task_run_input, RUN)
    assert str(error).startswith(f"502 Bad Gateway for run '{RUN}': non-JSON error body (text/html")
    assert "502 Bad Gateway" in error.message and error.ref_id is None


def test_a_200_that_is_not_json_is_retried_then_reported(router: respx.Router, client: ParallelClient) -> None:
    route = router.get(URL).respond(200, text="<html>maintenance</html>", headers={"content-type": "text/html"})
    error = raised(ResponseValidationError, client.get_task_run_input, RUN)
    assert route.call_count == 4
    assert "not valid JSON (text/html" in str(error) and error.status_code == 200


def test_truncated_json_then_success(router: respx.Router, client: ParallelClient) -> None:
    router.get(URL).mock(
        side_effect=[httpx.Response(200, text='{"processor": "co'), httpx.Response(200, json=GOOD_BODY)]
    )
    assert client.fetch(RUN).attempts == 2


def test_a_200_that_does_not_match_the_schema_is_not_retried(router: respx.Router, client: ParallelClient) -> None:
    route = router.get(URL).respond(200, json={"processor": 5, "input": ["x"]})
    error = raised(ResponseValidationError, client.get_task_run_input, RUN)
    assert route.call_count == 1
    assert "does not match TaskRunInput" in str(error) and "processor" in str(error) and "input" in str(error)


def test_redirects_are_not_followed(router: respx.Router, client: ParallelClient) -> None:
    elsewhere = router.get(url__startswith="https://evil.example").respond(200, json=GOOD_BODY)
    router.get(URL).respond(307, headers={"location": "https://evil.example/steal"})
    error = raised(APIStatusError, client.get_task_run_input, RUN)
    assert error.status_code == 307 and "redirect to https://evil.example not followed" in str(error)
    assert elsewhere.call_count == 0


def test_declared_oversize_body_is_refused_unread(router: respx.Router) -> None:
    router.get(URL).mock(
        return_value=httpx.Response(200, headers={"content-length": str(1024 * 1000)}, stream=httpx.ByteStream(b""))
    )
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler), max_response_bytes=10_000) as small:
        error = raised(ResponseTooLargeError, small.get_task_run_input, RUN)
    assert "declares 1024000 bytes" in str(error) and "10000-byte cap" in str(error)


def test_streamed_oversize_body_is_cut_off(router: respx.Router) -> None:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        for i in range(100_000):
            pulled.append(i)
            yield b"x" * 1024

    router.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=body()))
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler), max_response_bytes=64 * 1024) as small:
        error = raised(ResponseTooLargeError, small.get_task_run_input, RUN)
    assert "larger" in str(error)
    assert len(pulled) <= 66  # stopped just past the cap, never read 100 MB


def test_overall_deadline_cuts_a_slow_body(router: respx.Router) -> None:
    import time

    def slow() -> Iterator[bytes]:
        for _ in range(50):
            time.sleep(0.02)
            yield b" "

    router.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=slow()))
    policy = RetryPolicy(max_retries=2, deadline=0.1)
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler), retry_policy=policy) as small:
        error = raised(APITimeoutError, small.get_task_run_input, RUN)
    assert "0.1s deadline" in str(error)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "..",
        "a/b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a b",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\u200bb",
        "\ud800",
        "x" * 257,
        5,
        None,
    ],
)
def test_bad_run_ids_are_refused_before_any_request(router: respx.Router, client: ParallelClient, bad: Any) -> None:
    route = router.route().respond(200, json=GOOD_BODY)
    with pytest.raises(InvalidRunIdError):
        client.get_task_run_input(bad)
    assert route.call_count == 0


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(run_id=st.text(max_size=300))
def test_any_string_is_refused_or_requested_at_exactly_its_encoded_path(run_id: str) -> None:
    router = respx.Router(assert_all_called=False)
    route = router.route().respond(200, json=GOOD_BODY)
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler), retry_policy=FAST) as client:
        try:
            client.get_task_run_input(run_id)
        except InvalidRunIdError:
            assert route.call_count == 0
            return
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.url.host == "api.parallel.ai"
    assert request.url.raw_path.decode("ascii") == f"/v1/tasks/runs/{quote(run_id, safe='')}/input"
    assert request.url.raw_path.count(b"/") == 5


def test_run_input_path_encodes_reserved_characters() -> None:
    assert run_input_path("trun_abc") == "/v1/tasks/runs/trun_abc/input"
    assert run_input_path("a;b=c@d") == "/v1/tasks/runs/a%3Bb%3Dc%40d/input"
    assert run_input_path("ünï") == "/v1/tasks/runs/%C3%BCn%C3%AF/input"
    assert validate_run_id("x" * 256) == "x" * 256


@pytest.mark.parametrize(
    ("base_url", "ok"),
    [
        ("https://api.parallel.ai", True),
        ("https://proxy.example.com/parallel/", True),
        ("http://127.0.0.1:8787", True),
        ("http://localhost:8787", True),
        ("http://[::1]:8787", True),
        ("http://api.parallel.ai", False),
        ("http://10.0.0.1", False),
        ("ftp://api.parallel.ai", False),
        ("api.parallel.ai", False),
        ("https://user:pw@api.parallel.ai", False),
        ("https://api.parallel.ai?x=1", False),
    ],
)
def test_base_url_must_be_https_unless_loopback(base_url: str, ok: bool) -> None:
    if ok:
        assert not str(validate_base_url(base_url)).endswith("/") or base_url.endswith(":8787")
        ParallelClient(KEY, base_url=base_url).close()
    else:
        with pytest.raises(ValueError, match="base_url"):
            ParallelClient(KEY, base_url=base_url)


def test_base_url_with_a_path_prefix(router: respx.Router) -> None:
    route = router.get(f"https://proxy.example.com/parallel/v1/tasks/runs/{RUN}/input").respond(200, json=GOOD_BODY)
    with ParallelClient(
        KEY, base_url="https://proxy.example.com/parallel/", transport=httpx.MockTransport(router.handler)
    ) as c:
        c.get_task_run_input(RUN)
    assert route.call_count == 1


def test_injected_http_client_is_used_and_left_open(router: respx.Router) -> None:
    route = router.get(URL).respond(200, json=GOOD_BODY)
    http = httpx.Client(transport=httpx.MockTransport(router.handler), follow_redirects=True)
    with ParallelClient(KEY, http_client=http) as client:
        client.get_task_run_input(RUN)
    assert route.call_count == 1 and not http.is_closed
    http.close()


def test_timeouts_are_explicit_and_configurable(router: respx.Router) -> None:
    route = router.get(URL).respond(200, json=GOOD_BODY)
    with ParallelClient(KEY, transport=httpx.MockTransport(router.handler)) as client:
        client.get_task_run_input(RUN)
    assert route.calls.last.request.extensions["timeout"] == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    with ParallelClient(
        KEY, transport=httpx.MockTransport(router.handler), connect_timeout=1, read_timeout=2
    ) as client:
        client.get_task_run_input(RUN)
    assert route.calls.last.request.extensions["timeout"] == {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def test_errors_pickle_with_their_fields(router: respx.Router, client: ParallelClient) -> None:
    router.get(URL).respond(429, headers={"Retry-After": "999"}, json=envelope("quota", ref_id="r9"))
    error = raised(RateLimitError, client.get_task_run_input, RUN)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError and str(copy) == str(error)
    assert (copy.retry_after, copy.ref_id, copy.run_id, copy.status_code) == (999.0, "r9", RUN, 429)


# --- async twin --------------------------------------------------------------------------------


@pytest.fixture
async def aclient(router: respx.Router) -> Any:
    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(router.handler), retry_policy=FAST) as client:
        client.sleeps = []  # type: ignore[attr-defined]

        async def record(delay: float) -> None:
            client.sleeps.append(delay)  # type: ignore[attr-defined]

        client._sleep = record  # type: ignore[assignment]
        yield client


async def test_async_success_and_errors(router: respx.Router, aclient: AsyncParallelClient) -> None:
    router.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200, json=GOOD_BODY)])
    assert (await aclient.get_task_run_input(RUN)).processor == "core"
    router.get(URL).respond(404, json=envelope("Run id not found"))
    with pytest.raises(NotFoundError, match="404 Not Found for run"):
        await aclient.get_task_run_input(RUN)
    router.get(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        await aclient.get_task_run_input(RUN)


async def test_async_streamed_oversize_body(router: respx.Router) -> None:
    async def body() -> Any:
        for _ in range(10_000):
            yield b"x" * 1024

    router.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=body()))
    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(router.handler), max_response_bytes=4096) as c:
        with pytest.raises(ResponseTooLargeError):
            await c.get_task_run_input(RUN)


async def test_batch_keeps_order_and_isolates_failures(router: respx.Router, aclient: AsyncParallelClient) -> None:
    ids = [f"trun_{i:032x}" for i in range(40)]
    missing = set(ids[::7])

    def answer(request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.split("/")[4]
        if run_id in missing:
            return httpx.Response(404, json=envelope("Run id not found"))
        return httpx.Response(200, json={**GOOD_BODY, "metadata": {"id": run_id}})

    router.route().mock(side_effect=answer)
    results = await aclient.get_task_run_inputs([*ids, "bad/id"], concurrency=5)
    assert [r.run_id for r in results] == [*ids, "bad/id"]
    for result in results[:-1]:
        if result.run_id in missing:
            assert isinstance(result.error, NotFoundError) and result.run_input is None
        else:
            assert result.ok and result.unwrap().metadata == {"id": result.run_id}
    assert isinstance(results[-1].error, InvalidRunIdError)
    with pytest.raises(InvalidRunIdError):
        results[-1].unwrap()


async def test_batch_never_runs_more_than_its_concurrency() -> None:
    in_flight = 0
    peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(200, json=GOOD_BODY)

    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(answer)) as c:
        seen = [r async for r in c.iter_task_run_inputs((f"trun_{i}" for i in range(60)), concurrency=7)]
    assert len(seen) == 60 and all(r.ok for r in seen)
    assert peak == 7
    with pytest.raises(ValueError, match="concurrency"):
        async with AsyncParallelClient(KEY) as c:
            await c.get_task_run_inputs(["a"], concurrency=0)


async def test_batch_stops_cleanly_when_the_consumer_stops_early(router: respx.Router) -> None:
    router.route().respond(200, json=GOOD_BODY)
    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(router.handler)) as c:
        results = c.iter_task_run_inputs((f"trun_{i}" for i in range(1000)), concurrency=8)
        taken = [await results.__anext__() for _ in range(3)]
        await results.aclose()
    assert len(taken) == 3 and all(r.ok for r in taken)
    assert router.calls.call_count < 30  # it did not go on fetching the other 997
    assert [t for t in asyncio.all_tasks() if "iter_task_run_inputs.<locals>.work" in repr(t)] == []


async def test_a_bug_inside_one_fetch_costs_only_that_run(
    router: respx.Router, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    router.route().respond(200, json=GOOD_BODY)
    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(router.handler)) as c:
        original = c.fetch

        async def broken(run_id: str, *, quiet: bool = False) -> Any:
            if run_id == "trun_5":
                raise RuntimeError(f"a bug near {KEY}")
            return await original(run_id, quiet=quiet)

        monkeypatch.setattr(c, "fetch", broken)
        results = await c.get_task_run_inputs([f"trun_{i}" for i in range(20)], concurrency=4)
    assert [r.ok for r in results] == [i != 5 for i in range(20)]
    error = results[5].error
    assert type(error) is ParallelError and error.__cause__ is None
    assert str(error).startswith("Unexpected RuntimeError while fetching run 'trun_5': a bug near") and KEY not in str(
        error
    )
    (logged,) = [r.parallel_event for r in caplog.records if r.levelno == logging.ERROR]
    assert logged["event"] == "parallel.task_run_input.unexpected_error" and logged["run_id"] == "trun_5"
    assert KEY not in caplog.text and KEY not in repr(caplog.records)


async def test_an_iterable_of_run_ids_that_raises_surfaces_instead_of_hanging(router: respx.Router) -> None:
    router.route().respond(200, json=GOOD_BODY)

    def run_ids() -> Any:
        yield "trun_1"
        raise OSError("the run id file went away")

    async with AsyncParallelClient(KEY, transport=httpx.MockTransport(router.handler)) as c:
        with pytest.raises(OSError, match="went away"):
            await asyncio.wait_for(c.get_task_run_inputs(run_ids(), concurrency=4), 10)
