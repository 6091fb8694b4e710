"""Bad input: hypothesis throws any text as a run id and any bytes as a response at both clients, then the
parsed inputs and the raw decoded bodies at the validation. Only ``ParallelError`` subclasses come out
(or a result), never another exception, a RecursionError or a hang.

Responses are served through ``httpx.MockTransport`` (no sockets): random JSON, wrong types in every
field, JSON Schemas made of real keywords, deep nesting, huge strings, invalid UTF-8, non-JSON, any
status from 100 to 599, hostile headers (Retry-After, Location, Content-Length, Content-Encoding), and
transport failures, one to three of them in a row so retries are exercised too. The async client's
default path (aiohttp, no httpx) gets the same bodies, plus malformed HTTP, as raw bytes from a socket.

Six library bugs turned up here and were fixed; a test at the end of this module pins each one down
with the input that found it.
"""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import string
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parallel_tasks import AsyncParallelClient, ParallelClient, RetryPolicy
from parallel_tasks.errors import APITimeoutError, InvalidRunIdError, ParallelError, ResponseValidationError
from parallel_tasks.lineage import build_record, canonical_json, render_markdown
from parallel_tasks.models import TaskRunInput, ValidationReport
from parallel_tasks.validation import check_task_run_input

# The thread method: a client stuck in epoll_wait without a timeout is not woken by SIGALRM if the signal
# lands on another thread (the raw server's), so only the thread method is sure to end a hang.
pytestmark = pytest.mark.timeout(120, method="thread")
# No single example may take this long: the clients' read timeout is at most 10 s, with at most 3 attempts.
HANG_S = 60.0

T = TypeVar("T")
BASE_URL = "https://api.parallel.test"
KEY = "fuzz-key-0123456789"
# Tiny waits: a fuzzed Retry-After of up to 10 ms is honoured, anything longer ends the retries.
POLICY = RetryPolicy(max_retries=2, initial_delay=0.0, max_delay=0.0, max_retry_after=0.01, deadline=10.0)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# --- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**4000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
SCHEMA_KEYWORDS = [
    "type", "properties", "items", "prefixItems", "required", "enum", "const", "$ref", "$defs", "$id",
    "$schema", "$dynamicRef", "$anchor", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "pattern",
    "patternProperties", "additionalProperties", "minimum", "maximum", "minLength", "maxItems", "format",
    "uniqueItems", "contains", "dependentSchemas", "unevaluatedProperties", "propertyNames", "multipleOf",
]  # fmt: skip
schema_atoms = (
    st.sampled_from(["string", "object", "array", "integer", "number", "null", "boolean", "bogus"])
    | st.sampled_from(["#", "#/$defs/a", "#/$defs/a/$ref", "http://x.test/s", "file:///etc/passwd", "a#b", "#/" * 5])
    | st.sampled_from(["[", "(?P<x", "^a+$", "\\", "(a+)+$"])
    | scalars
)
json_schemas = st.recursive(
    schema_atoms,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(SCHEMA_KEYWORDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)
schema_specs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["json", "text", "auto", "xml"]) | json_values},
        optional={"json_schema": json_schemas, "description": json_values},
    ),
    st.fixed_dictionaries({"type": st.just("json"), "json_schema": json_schemas}),
)
hostnames = st.sampled_from(["example.com", "*.gov", "http://a.test/x", "..", "a..b", "-x-.com", "", "é.fr"])
source_policies = st.fixed_dictionaries(
    {},
    optional={
        "include_domains": st.lists(hostnames | st.text(max_size=20), max_size=6) | json_values,
        "exclude_domains": st.lists(hostnames | st.text(max_size=20), max_size=6) | json_values,
        "after_date": st.sampled_from(["2024-01-01", "2024-13-45", "yesterday", ""]) | json_values,
    },
)
# Bodies shaped like a TaskRunInput, with anything at all in each field: the validation's real inputs.
known_fields = st.fixed_dictionaries(
    {
        "processor": st.sampled_from(["base", "core", "ultra8x-fast", "quantum"]) | json_values,
        "input": st.text(max_size=50) | st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
    },
    optional={
        "metadata": st.dictionaries(st.text(max_size=24), json_values, max_size=5) | json_values,
        "source_policy": source_policies | json_values,
        "task_spec": st.fixed_dictionaries({}, optional={"input_schema": schema_specs, "output_schema": schema_specs})
        | json_values,
        "mcp_servers": st.lists(
            st.fixed_dictionaries(
                {"url": st.text(max_size=30)}, optional={"headers": json_values, "name": json_values}
            ),
            max_size=2,
        )
        | json_values,
        "webhook": st.fixed_dictionaries({"url": st.text(max_size=30)}) | json_values,
        "memory_scope_key": st.text(max_size=140) | json_values,
        "enable_events": json_values,
        "previous_interaction_id": json_values,
    },
)
near_valid_bodies = st.builds(
    lambda extra, known: {**extra, **known},
    st.dictionaries(st.text(max_size=10), json_values, max_size=2),
    known_fields,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def deep_bodies(draw: st.DrawFn, max_depth: int = 200_000) -> tuple[bytes, int]:
    """JSON (or almost JSON) nested up to ``max_depth`` levels, alone or inside a body's field."""
    depth = draw(st.integers(1, min(1000, max_depth)) | st.integers(1, max_depth))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    leaf = draw(st.sampled_from([b"1", b'"x"', b"{}", b"null"]))
    closed = draw(st.booleans())
    nested = opener * depth + leaf + (closer * depth if closed else b"")
    where = draw(st.sampled_from(["body", "input", "metadata", "schema", "mcp"]))
    if where == "body":
        return nested, depth
    if where == "schema":
        spec = b'{"output_schema":{"type":"json","json_schema":{"properties":{"a":' + nested + b"}}}}"
        return b'{"processor":"core","input":{"a":1},"task_spec":' + spec + b"}", depth + 6
    wrappers = {
        "input": (b'{"processor":"core","input":', b"}"),
        "metadata": (b'{"processor":"core","input":"q","metadata":{"k":', b"}}"),
        "mcp": (b'{"processor":"core","input":"q","mcp_servers":[{"url":"u","headers":', b"}]}"),
    }
    before, after = wrappers[where]
    return before + nested + after, depth + 3


@st.composite
def huge_bodies(draw: st.DrawFn) -> bytes:
    """A body with one very long string (up to 3 MB) somewhere."""
    size = draw(st.integers(10_000, 3_000_000))
    text = draw(st.sampled_from(["a", "é", "\x00", "😀", "\\", "a.b/", " "])) * (size // 4)
    field = draw(st.sampled_from(["processor", "input", "metadata", "domain", "run_id_echo", "schema"]))
    body: dict[str, Any] = {"processor": "core", "input": "q"}
    if field == "metadata":
        body["metadata"] = {"k": text, text[:5000]: 1}
    elif field == "domain":
        body["source_policy"] = {"include_domains": [text]}
    elif field == "schema":
        body["task_spec"] = {"output_schema": {"type": "json", "json_schema": {"pattern": text}}}
    elif field == "run_id_echo":
        body["type"] = "error"
        body["error"] = {"ref_id": text, "message": text, "detail": {"x": text}}
    else:
        body[field] = text
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def invalid_utf8_bodies(draw: st.DrawFn) -> bytes:
    """Valid JSON around bytes that are not UTF-8 (lone continuation bytes, overlongs, surrogates...)."""
    bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]))
    bad = draw(st.binary(max_size=8)) + bad + draw(st.binary(max_size=8))
    template = draw(
        st.sampled_from(
            [
                b'{"processor":"@","input":"q"}',
                b'{"processor":"core","input":"@"}',
                b'{"processor":"core","input":"q","metadata":{"@":"v"}}',
                b'{"type":"error","error":{"ref_id":"@","message":"@"}}',
                b"@",
            ]
        )
    )
    return template.replace(b"@", bad)


json_bodies = json_values.map(_dumps)
bodies = st.one_of(
    json_bodies,
    near_valid_bodies.map(_dumps),
    huge_bodies(),
    invalid_utf8_bodies(),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [b"", b"<html><title>502</title></html>", b"null", b"[]", b'"str"', b"NaN", b"{", b"\xef\xbb\xbf{}"]
    ),
    st.sampled_from([b"9" * 5000, b"1e99999", b"-0", b"1" + b"0" * 400 + b".5"]).map(  # past int/float limits
        lambda number: b'{"processor":"core","input":"q","metadata":{"k":' + number + b"}}"
    ),
)
header_text = st.text(st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"), max_size=40)
hostile_headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(["application/json", "text/html", "application/json; charset=latin-1"])
        | header_text,
        "retry-after": st.sampled_from(["0", "0.005", "-1", "nan", "inf", "1e999", "Wed, 21 Oct 2015 07:28:00 GMT"])
        | header_text,
        "retry-after-ms": st.sampled_from(["0", "5", "-5", "1e400", "nan"]) | header_text,
        "x-should-retry": st.sampled_from(["true", "false", "TRUE", "maybe"]) | header_text,
        "location": st.sampled_from(["http://[::1", "//evil.test/x", "http://evil.test:99999/", "javascript:x"])
        | header_text,
        "content-length": st.sampled_from(["0", "-1", "abc", "99999999999999999999999", "1"]) | header_text,
        "content-encoding": st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "gzip, br", "bogus"]),
    },
)
COMMON_STATUSES = [200, 201, 204, 301, 302, 307, 308, 401, 404, 422, 429, 500, 502, 503]
statuses = st.sampled_from(COMMON_STATUSES) | st.integers(100, 599)
TRANSPORT_ERRORS: list[Callable[[str], BaseException]] = [
    httpx.ConnectError,
    httpx.ReadTimeout,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
    ConnectionResetError,
    TimeoutError,
]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a response, or a transport failure."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    failure: Callable[[str], BaseException] | None = None

    def build(self, request: httpx.Request) -> httpx.Response:
        if self.failure is not None:
            raise self.failure(f"fuzzed failure for {request.url}")
        names = {name.lower() for name, _ in self.headers}
        length = () if b"content-length" in names else ((b"content-length", str(len(self.body)).encode()),)
        return httpx.Response(self.status, headers=[*self.headers, *length], stream=httpx.ByteStream(self.body))


def _finite(run_input: TaskRunInput) -> bool:
    try:
        json.dumps(run_input.model_dump(mode="json"), allow_nan=False)
    except ValueError:
        return False
    return True


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    if draw(st.integers(0, 9)) == 0:
        return Reply(failure=draw(st.sampled_from(TRANSPORT_ERRORS)))
    status = draw(statuses)
    kind = draw(st.sampled_from(["any", "any", "deep", "valid"]))
    if kind == "deep":
        body, _ = draw(deep_bodies(200_000))
    elif kind == "valid":
        body = _dumps({"processor": "core", "input": draw(st.text(max_size=20))})
    else:
        body = draw(bodies)
    headers = draw(hostile_headers)
    encoded = tuple((name.encode(), value.encode("latin-1")) for name, value in headers.items())
    return Reply(status, body, encoded)


reply_scripts = st.lists(replies(), min_size=1, max_size=3)
run_ids = (
    st.text()
    | st.text(st.characters(exclude_categories=()))  # surrogates, controls, unassigned code points too
    | st.text(alphabet="/?#%.\\ \t\n\x00é", max_size=6)
    | st.builds(lambda a, b: f"trun_{a}{b}", st.text(string.hexdigits, max_size=32), st.text(max_size=4))
    | st.sampled_from([".", "..", "%2e%2e", "a/../b", "trun_x?y", "trun_x#y", " ", "\u200b", "x" * 256, "x" * 257])
)
any_run_ids: st.SearchStrategy[Any] = run_ids | st.sampled_from([None, 0, 1.5, b"trun_x", ["trun_x"], {"a": 1}])

# --- what must hold for every outcome --------------------------------------------------------------


class Scripted:
    """A MockTransport handler that plays replies in turn (the last one repeats) and keeps the requests."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.script[min(len(self.requests), len(self.script)) - 1].build(request)


def bounded(outcome: Coroutine[Any, Any, T], script: Any = None) -> T:
    """Run one example's coroutine; an example that never ends fails as a hang, naming its responses."""

    async def within_bound() -> T:
        try:
            return await asyncio.wait_for(outcome, HANG_S)
        except asyncio.TimeoutError:
            raise AssertionError(f"no outcome after {HANG_S:g} s (a hang) for {script!r:.2000}") from None

    return asyncio.run(within_bound())


def check_error(error: BaseException) -> None:
    """Only the package's own errors, and they render and pickle (Prefect stores them in failed states)."""
    assert isinstance(error, ParallelError), f"{type(error).__name__} escaped: {error!r}"
    assert str(error) is not None and repr(error)
    assert type(pickle.loads(pickle.dumps(error))) is type(error)


def check_parsed(run_input: TaskRunInput) -> None:
    """A parsed input goes through the validation and the audit record without raising."""
    report = check_task_run_input(run_input)
    assert isinstance(report, ValidationReport) and report.verdict in ("valid", "valid_with_warnings", "invalid")
    if not _finite(run_input):  # a number that overflows to inf (1e400): refused with a clear error
        with pytest.raises(ValueError, match="cannot be recorded as canonical JSON"):
            build_record("trun_fuzz", run_input, report, base_url=BASE_URL, secrets=[KEY])
        return
    record = build_record("trun_fuzz", run_input, report, base_url=BASE_URL, secrets=[KEY])
    canonical_json(record.model_dump(mode="json"))
    render_markdown(record)


def check_raw_body(body: bytes) -> None:
    """Whatever ``json.loads`` makes of a body, the validation reports on it and never raises."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or too deep for the stdlib decoder: nothing to validate
        return
    report = check_task_run_input(decoded)
    assert isinstance(report, ValidationReport)
    if not isinstance(decoded, dict):
        assert report.verdict == "invalid"


def sync_outcome(run_id: Any, script: list[Reply], max_bytes: int) -> tuple[TaskRunInput | None, Scripted]:
    handler = Scripted(script)
    with ParallelClient(
        KEY,
        base_url=BASE_URL,
        transport=httpx.MockTransport(handler),
        retry_policy=POLICY,
        max_response_bytes=max_bytes,
    ) as client:
        try:
            return client.get_task_run_input(run_id), handler
        except ParallelError as error:
            check_error(error)
            return None, handler


def async_outcome(run_id: Any, script: list[Reply], max_bytes: int) -> tuple[TaskRunInput | None, Scripted]:
    handler = Scripted(script)

    async def run() -> TaskRunInput | None:
        async with AsyncParallelClient(
            KEY,
            base_url=BASE_URL,
            transport=httpx.MockTransport(handler),
            retry_policy=POLICY,
            max_response_bytes=max_bytes,
        ) as client:
            results = await client.get_task_run_inputs([run_id], concurrency=1)
            (result,) = results
            if result.error is not None:
                check_error(result.error)
            try:
                return await client.get_task_run_input(run_id)
            except ParallelError as error:
                check_error(error)
                return None

    return bounded(run()), handler


# --- raw HTTP for the async client's default path (aiohttp) ----------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1, in a thread of its own, that answers each connection's first request
    with the next scripted bytes (the last one repeats), whatever they are, then closes the connection."""

    def __init__(self) -> None:
        self.script: list[bytes] = [b""]
        self.requests: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-http", daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._answer, "127.0.0.1", 0), self._loop)
        self._server = started.result(timeout=10)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def play(self, script: list[bytes]) -> None:
        self.script, self.requests = script, []

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.script[min(len(self.requests), len(self.script)) - 1])
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@st.composite
def raw_responses(draw: st.DrawFn) -> bytes:
    """What a broken server or proxy might send: well-formed responses with the fuzzed bodies and headers,
    chunked ones with right or wrong chunk sizes, malformed status lines and headers, or any bytes."""
    kind = draw(st.sampled_from(["plain", "plain", "chunked", "malformed", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    reply = draw(replies().filter(lambda r: r.failure is None))
    status_line = b"HTTP/1.1 %d Fuzzed\r\n" % reply.status
    headers = [*reply.headers, (b"connection", b"close")]
    body = reply.body
    if kind == "chunked":
        headers = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
        headers.append((b"transfer-encoding", b"chunked"))
        cut = draw(st.integers(0, len(body)))
        chunks = [part for part in (body[:cut], body[cut:]) if part]
        sizes = [len(part) + draw(st.sampled_from([0, 0, 0, 1, -1])) for part in chunks]
        body = b"".join(b"%x\r\n%s\r\n" % (max(size, 0), part) for size, part in zip(sizes, chunks, strict=True))
        body += draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"", b"zz\r\n"]))
    elif b"content-length" not in {k for k, _ in headers}:
        headers.append((b"content-length", b"%d" % len(body)))
    head = status_line + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    if kind == "malformed":
        head = draw(
            st.sampled_from(
                [
                    head.replace(b"HTTP/1.1", b"HTTP/9.9", 1),
                    head.replace(b"\r\n", b"\n"),
                    head[: len(head) // 2],
                    b"HTTP/1.1 abc Bad\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nno-colon-here\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n",
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                    b"\x00" + head,
                ]
            )
        )
    return head + body


def aiohttp_outcome(server: RawServer, script: list[bytes], max_bytes: int) -> TaskRunInput | None:
    server.play(script)

    async def run() -> TaskRunInput | None:
        async with AsyncParallelClient(
            KEY, base_url=server.base_url, retry_policy=POLICY, max_response_bytes=max_bytes, read_timeout=10
        ) as client:
            (result,) = await client.get_task_run_inputs(["trun_raw"], concurrency=1)
            if result.error is not None:
                check_error(result.error)
            try:
                return await client.get_task_run_input("trun_raw")
            except ParallelError as error:
                check_error(error)
                return None

    return bounded(run(), script)


max_bytes = st.sampled_from([32 * 1024 * 1024, 100_000, 64])

# --- the fuzzers ------------------------------------------------------------------------------------


@FUZZ
@given(run_id=any_run_ids)
@example(run_id="..")
@example(run_id="trun_a/../../v2/admin")
@example(run_id="trun_%2F")
def test_any_run_id_is_refused_or_lands_on_its_own_url(run_id: Any) -> None:
    good = Reply(200, _dumps({"processor": "core", "input": "q"}))
    sync_handler, async_handler = Scripted([good]), Scripted([good])
    with ParallelClient(KEY, base_url=BASE_URL, transport=httpx.MockTransport(sync_handler)) as client:
        results = [client.fetch(run_id)]

    async def fetch_async() -> None:
        async with AsyncParallelClient(KEY, base_url=BASE_URL, transport=httpx.MockTransport(async_handler)) as client:
            results.append(await client.fetch(run_id))
            results.extend(await client.get_task_run_inputs([run_id]))

    asyncio.run(fetch_async())
    refused = [isinstance(result.error, InvalidRunIdError) for result in results]
    assert refused in ([True] * 3, [False] * 3), results  # both clients, both APIs agree
    if refused[0]:  # refused before any request
        assert not sync_handler.requests and not async_handler.requests
        return
    assert isinstance(run_id, str) and all(result.ok for result in results), results
    for request in [*sync_handler.requests, *async_handler.requests]:
        assert request.url.host == "api.parallel.test" and request.url.query == b""
        raw_path = request.url.raw_path.decode("ascii")
        assert raw_path.startswith("/v1/tasks/runs/") and raw_path.endswith("/input")
        segment = raw_path[len("/v1/tasks/runs/") : -len("/input")]
        assert "/" not in segment and unquote(segment) == run_id  # one path segment, exactly the id


@FUZZ
@given(script=reply_scripts, max_bytes=max_bytes)
def test_sync_client_turns_any_response_into_an_input_or_a_parallel_error(script: list[Reply], max_bytes: int) -> None:
    run_input, handler = sync_outcome("trun_fuzz", script, max_bytes)
    assert 1 <= len(handler.requests) <= POLICY.max_retries + 1
    if run_input is not None:
        check_parsed(run_input)
    for reply in script:
        check_raw_body(reply.body)


@FUZZ
@given(script=reply_scripts, max_bytes=max_bytes)
def test_async_client_turns_any_response_into_an_input_or_a_parallel_error(script: list[Reply], max_bytes: int) -> None:
    run_input, handler = async_outcome("trun_fuzz", script, max_bytes)
    assert 2 <= len(handler.requests) <= 2 * (POLICY.max_retries + 1)  # the batch API, then the single call
    if run_input is not None:
        check_parsed(run_input)


@settings(FUZZ, max_examples=150)
@given(script=st.lists(raw_responses(), min_size=1, max_size=3), max_bytes=max_bytes)
def test_default_async_transport_turns_any_raw_response_into_an_input_or_a_parallel_error(
    raw_server: RawServer, script: list[bytes], max_bytes: int
) -> None:
    run_input = aiohttp_outcome(raw_server, script, max_bytes)
    assert raw_server.requests  # the bytes really went through a socket and aiohttp
    if run_input is not None:
        check_parsed(run_input)


@settings(FUZZ, max_examples=300)
@given(body=st.one_of(near_valid_bodies, json_values, st.dictionaries(st.text(max_size=12), json_values)))
def test_validation_reports_on_any_decoded_body(body: Any) -> None:
    report = check_task_run_input(body)
    assert isinstance(report, ValidationReport)
    json.dumps(report.model_dump(mode="json"))  # the report itself is plain JSON


@settings(FUZZ, max_examples=60)
@given(deep=deep_bodies(200_000))
def test_deep_nesting_in_a_2xx_body_never_raises_recursion_error(deep: tuple[bytes, int]) -> None:
    body, _ = deep
    for outcome in (sync_outcome, async_outcome):
        run_input, _ = outcome("trun_deep", [Reply(200, body)], 32 * 1024 * 1024)
        if run_input is not None:
            check_parsed(run_input)
    check_raw_body(body)


@settings(FUZZ, max_examples=60)
@given(depth=st.integers(0, sys.getrecursionlimit()), leaf=json_values)
def test_validation_of_deep_decoded_structures_never_raises(depth: int, leaf: Any) -> None:
    """Up to the recursion limit, in every field the validation walks."""
    deep: Any = leaf
    for level in range(depth):  # a tree, as a decoder returns: no node shared between two parents
        deep = [deep] if level % 2 else {"type": "object", "items": {}, "a": deep} if level % 3 else {"items": deep}
    for body in (
        deep,
        {"processor": "core", "input": deep, "metadata": {"k": deep}, "source_policy": {"include_domains": deep}},
        {"processor": "core", "input": {"a": 1}, "task_spec": {"input_schema": {"type": "json", "json_schema": deep}}},
        {"processor": "core", "input": "q", "task_spec": {"output_schema": {"type": "json", "json_schema": deep}}},
    ):
        assert isinstance(check_task_run_input(body), ValidationReport)


# --- the library bugs this suite found, pinned down ---------------------------------------------


@pytest.mark.parametrize("client", ["sync", "async"])
def test_deeply_nested_error_body_is_reported_not_raised(client: str) -> None:
    body = b"[" * 100_000  # e.g. a 502 from a broken proxy
    outcome = sync_outcome if client == "sync" else async_outcome
    run_input, handler = outcome("trun_deep", [Reply(502, body)], 32 * 1024 * 1024)
    assert run_input is None and handler.requests


@pytest.mark.parametrize(
    ("client", "status", "location"),
    [
        ("sync", 300, b"http://[::1"),
        ("async", 300, b"http://[::1"),
        ("async", 307, b"http://[::1"),
        ("sync", 307, b"x:y"),
        ("aiohttp", 302, b"http://api.parallel.test/\x80"),
    ],
)
def test_unparsable_location_on_a_3xx_is_reported_not_raised(
    raw_server: RawServer, client: str, status: int, location: bytes
) -> None:
    if client == "aiohttp":
        response = b"HTTP/1.1 %d Moved\r\nlocation: %s\r\ncontent-length: 0\r\n\r\n" % (status, location)
        assert aiohttp_outcome(raw_server, [response], 32 * 1024 * 1024) is None and raw_server.requests
        return
    reply = Reply(status, b"", ((b"location", location),))
    outcome = sync_outcome if client == "sync" else async_outcome
    run_input, handler = outcome("trun_loc", [reply], 32 * 1024 * 1024)
    assert run_input is None and handler.requests


def test_unparsable_location_through_a_given_async_http_client_is_reported_not_raised() -> None:
    """An injected httpx.AsyncClient prepares the redirect's next request as the sync one does."""
    handler = Scripted([Reply(307, b"", ((b"location", b"x:y"),))])

    async def fetch() -> Any:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
            AsyncParallelClient(KEY, base_url=BASE_URL, http_client=http, retry_policy=POLICY) as client,
        ):
            return await client.fetch("trun_loc")

    result = asyncio.run(fetch())
    assert isinstance(result.error, ResponseValidationError) and "not a usable URL" in str(result.error)
    assert len(handler.requests) == 1


@pytest.mark.parametrize("number", [b"NaN", b"-Infinity", b"Infinity"])
@pytest.mark.parametrize("client", ["sync", "async"])
def test_nan_and_infinity_are_refused_by_the_client(client: str, number: bytes) -> None:
    """pydantic's JSON parser takes NaN and Infinity (Python's json.dumps writes them by default), but no
    record could hold them: canonical JSON refuses them, pydantic would write them back as null."""
    body = b'{"processor":"core","input":"q","metadata":{"score":%s,"note":"NaN"}}' % number
    handler = Scripted([Reply(200, body)])
    transport = httpx.MockTransport(handler)
    if client == "sync":
        with ParallelClient(KEY, base_url=BASE_URL, transport=transport, retry_policy=POLICY) as sync_client:
            result = sync_client.fetch("trun_nan")
    else:

        async def fetch() -> Any:
            async with AsyncParallelClient(KEY, base_url=BASE_URL, transport=transport, retry_policy=POLICY) as c:
                return await c.fetch("trun_nan")

        result = asyncio.run(fetch())
    assert isinstance(result.error, ResponseValidationError) and not result.error.retryable
    assert "holds NaN or Infinity" in str(result.error) and len(handler.requests) == 1


@pytest.mark.parametrize("number", [b"1e400", b"-" + b"9" * 400 + b".5"])
def test_a_number_that_overflows_is_refused_by_the_client_and_when_recorded(number: bytes) -> None:
    body = b'{"processor":"core","input":"q","metadata":{"score":%s}}' % number
    fetched, handler = sync_outcome("trun_inf", [Reply(200, body)], 32 * 1024 * 1024)
    assert fetched is None and len(handler.requests) == 1
    run_input = TaskRunInput.model_validate_json(body)  # an input parsed elsewhere, then recorded
    assert run_input.metadata is not None and math.isinf(run_input.metadata["score"])
    report = check_task_run_input(run_input)
    with pytest.raises(ValueError, match="cannot be recorded as canonical JSON: it holds NaN or an infinite number"):
        build_record("trun_inf", run_input, report, base_url=BASE_URL)


def test_the_same_words_inside_strings_are_fine() -> None:
    body = b'{"processor":"core","input":"NaN Infinity 1e400 ' + b"9" * 400 + b'","metadata":{"x":1e300}}'
    run_input, _ = sync_outcome("trun_words", [Reply(200, body)], 32 * 1024 * 1024)
    assert run_input is not None and run_input.metadata == {"x": 1e300}
    check_parsed(run_input)


def _in_a_fresh_thread(function: Callable[[], Any]) -> Any:
    """Run ``function`` on a new thread, whose stack depth is the same whoever calls (a Prefect worker
    thread is like it), and re-raise whatever it raised."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=100)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_validation_of_a_decoded_body_near_the_recursion_limit_never_raises() -> None:
    def sweep() -> int:
        validated = 0
        limit = sys.getrecursionlimit()
        for depth in range(limit, limit - 60, -1):
            text = '{"processor":"core","input":{"a":1},"task_spec":{"input_schema":{"type":"json","json_schema":'
            text += '{"items":' * depth + "{}" + "}" * depth + "}}}"
            try:
                body = json.loads(text)  # a body as a JSON decoder returns it
            except RecursionError:
                continue
            assert isinstance(check_task_run_input(body), ValidationReport)
            validated += 1
        return validated

    assert _in_a_fresh_thread(sweep) > 0


@pytest.mark.parametrize("client", ["sync", "async"])
def test_non_decimal_digit_in_content_length_is_reported_not_raised(client: str) -> None:
    reply = Reply(200, b"{}", ((b"content-length", "²".encode()),))
    outcome = sync_outcome if client == "sync" else async_outcome
    run_input, handler = outcome("trun_length", [reply], 32 * 1024 * 1024)
    assert run_input is None and handler.requests


HANGING_RESPONSES = {
    "1xx-with-a-large-body": b"HTTP/1.1 160 Odd\r\ncontent-length: 600000\r\nconnection: close\r\n\r\n"
    + b"a" * 600_000,
    "chunk-one-byte-longer-than-declared": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    + b"%x\r\n" % (140_000 - 1)
    + b"a" * 140_000
    + b"\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("response", list(HANGING_RESPONSES))
def test_malformed_response_does_not_hang_the_default_async_path(raw_server: RawServer, response: str) -> None:
    raw_server.play([HANGING_RESPONSES[response]])

    async def fetch() -> Any:
        policy = RetryPolicy(max_retries=0)
        async with AsyncParallelClient(
            KEY, base_url=raw_server.base_url, retry_policy=policy, read_timeout=0.5, connect_timeout=0.5
        ) as client:
            return await client.fetch("trun_hang")

    # No outcome in 5 times connect + read timeouts is a hang.
    result = asyncio.run(asyncio.wait_for(fetch(), 5))
    assert isinstance(result.error, APITimeoutError) and "no progress for 0.5s" in str(result.error)


# --- compressed bodies ------------------------------------------------------------------------------

# 4 MiB of JSON in 4 KiB of gzip: decompressed, it would pass a 64 KiB cap many times over before the cap saw it.
BOMB = __import__("gzip").compress(b'{"processor":"core","input":"' + b" " * (4 << 20) + b'"}')


def test_a_compressed_body_is_never_decompressed_on_any_path(raw_server: RawServer) -> None:
    """No encoding is asked for, and a 2xx that is encoded anyway is refused by name, on all three paths."""
    seen: list[httpx.Request] = []

    class Streamed(httpx.SyncByteStream, httpx.AsyncByteStream):  # as a network transport gives it: not read yet
        def __iter__(self) -> Iterator[bytes]:
            yield BOMB

        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield BOMB

    def bomb(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Streamed(), headers={"content-encoding": "gzip"})

    options: dict[str, Any] = {"base_url": BASE_URL, "retry_policy": POLICY, "max_response_bytes": 64 * 1024}
    with ParallelClient(KEY, transport=httpx.MockTransport(bomb), **options) as client:
        sync_error = client.fetch("trun_bomb").error

    async def through_httpx() -> ParallelError | None:
        async with AsyncParallelClient(KEY, transport=httpx.MockTransport(bomb), **options) as client:
            return (await client.fetch("trun_bomb")).error

    async def through_aiohttp() -> ParallelError | None:
        options["base_url"] = raw_server.base_url
        async with AsyncParallelClient(KEY, **options) as client:
            return (await client.fetch("trun_bomb")).error

    raw_server.play([b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (len(BOMB), BOMB)])
    errors = [sync_error, asyncio.run(through_httpx()), asyncio.run(through_aiohttp())]
    for error in errors:
        assert isinstance(error, ResponseValidationError), error
        assert "is 'gzip'-encoded, though none was asked for" in str(error)
    assert [request.headers["accept-encoding"] for request in seen] == ["identity", "identity"]
    assert b"\r\naccept-encoding: identity\r\n" in raw_server.requests[0].lower()


# --- a server that trickles its headers ----------------------------------------------------------


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request with a whole response, one byte every 50 ms (about 5 s in all)."""
    import socket

    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-pad: " + b"a" * 40
    response = head + b"\r\ncontent-length: 2\r\n\r\n{}"
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip(connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                for byte in response:
                    if stop.wait(0.05):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_the_overall_deadline_holds_while_a_server_trickles_its_headers(trickling_server: str) -> None:
    """httpx's read timeout starts again with every byte, and aiohttp's guard allowed connect + read before the
    headers: without the deadline on the exchange itself, each path would wait the whole 5 s of trickle."""
    policy = RetryPolicy(max_retries=0, deadline=0.5)
    options: dict[str, Any] = {"base_url": trickling_server, "retry_policy": policy, "read_timeout": 0.3}

    async def fetch(transport: httpx.AsyncBaseTransport | None) -> ParallelError | None:
        async with AsyncParallelClient(KEY, transport=transport, **options) as client:
            return (await client.fetch("trun_trickled")).error

    with ParallelClient(KEY, **options) as client:
        errors = [client.fetch("trun_trickled").error]
    errors += [asyncio.run(fetch(None)), asyncio.run(fetch(httpx.AsyncHTTPTransport()))]
    for error in errors:
        assert isinstance(error, APITimeoutError) and "the overall 0.5s deadline passed" in str(error), error
