"""Both clients' default transports go through the proxy the environment names (HTTP(S)_PROXY, NO_PROXY), as
users behind a corporate proxy expect; a proxy's credentials never show in an error."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from parallel_tasks import APIConnectionError, AsyncParallelClient, FetchResult, ParallelClient
from parallel_tasks._urls import environment_proxy, shown_proxy

RUN_ID = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
PATH = f"/v1/tasks/runs/{RUN_ID}/input"
PROXY_PASSWORD = "proxy-pass-4f9d2c"  # a test value, looked for in errors


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    """One local HTTP server that answers every GET with a run input, recording each request's target: the
    absolute URL when it was asked as a forwarding proxy, the path alone when asked directly."""
    targets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            targets.append(self.path)
            body = json.dumps({"processor": "base", "input": "through the proxy"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port, targets
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_inherited_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)


def fetch(kind: str, base_url: str) -> FetchResult:
    """One fetch through the client of that kind on its default transport, no retries."""
    if kind == "sync":
        with ParallelClient("key", base_url=base_url, max_retries=0) as client:
            return client.fetch(RUN_ID)

    async def fetch_async() -> FetchResult:
        async with AsyncParallelClient("key", base_url=base_url, max_retries=0) as client:
            return await client.fetch(RUN_ID)

    return asyncio.run(fetch_async())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_requests_go_through_the_environment_proxy_unless_no_proxy_names_the_host(
    kind: str, server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, targets = server
    base_url = f"http://localhost:{port}"
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    through_proxy = fetch(kind, base_url)
    assert through_proxy.ok and through_proxy.unwrap().input == "through the proxy"
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert fetch(kind, base_url).ok
    assert targets == [f"{base_url}{PATH}", PATH]  # asked as a proxy first (the absolute URL), then directly


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_proxy_that_refuses_connections_is_a_connection_error_without_its_credentials(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}@127.0.0.1:{closed_port}")
    result = fetch(kind, "https://api.parallel.invalid")
    assert isinstance(result.error, APIConnectionError)
    assert f"through the proxy http://127.0.0.1:{closed_port}:" in str(result.error)  # the proxy failed, not the API
    assert PROXY_PASSWORD not in str(result.error) and PROXY_PASSWORD not in repr(result)


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        ("http://proxy.example:3128", "http://proxy.example:3128"),
        ("http://user:p@ss/word@proxy.example:3128/", "http://proxy.example:3128"),
        ("http://user:a://b@proxy.example:3128", "http://proxy.example:3128"),
        ("http://user:pw@proxy.example:3128?token=x#y", "http://proxy.example:3128"),
        ("user:pw@proxy.example:3128", "http://proxy.example:3128"),
        ("http://user:pw@[::1]:3128", "http://[::1]:3128"),
        ("socks5://u:pw@10.0.0.1:1080", "socks5://10.0.0.1:1080"),
    ],
)
def test_an_error_shows_a_proxy_without_its_credentials(proxy: str, shown: str) -> None:
    assert shown_proxy(proxy) == shown


def test_a_client_given_its_own_transport_names_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with ParallelClient("key", transport=httpx.MockTransport(refuse), max_retries=0) as client:
        error = client.fetch(RUN_ID).error
    assert isinstance(error, APIConnectionError) and "proxy" not in str(error)


@pytest.mark.parametrize("client", [ParallelClient, AsyncParallelClient])
def test_a_client_given_its_own_transport_never_looks_at_the_environment_proxy(
    client: type[ParallelClient] | type[AsyncParallelClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw://x@proxy.example:3128")  # unusable, and not its business
    made = client("key", transport=httpx.MockTransport(refuse))
    assert made._proxy is None


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_proxy_named_without_a_scheme_is_taken_as_http(
    kind: str, server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, targets = server
    monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{port}")
    assert fetch(kind, f"http://localhost:{port}").ok
    assert targets == [f"http://localhost:{port}{PATH}"]


@pytest.mark.parametrize("client", [ParallelClient, AsyncParallelClient])
def test_a_proxy_that_is_not_a_usable_url_is_refused_once_without_its_credentials(
    client: type[ParallelClient] | type[AsyncParallelClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}://x@proxy.example:3128")
    with pytest.raises(ValueError, match="https proxy the environment names is not a usable URL") as raised:
        client("key")
    assert str(raised.value).endswith(": http://proxy.example:3128") and PROXY_PASSWORD not in str(raised.value)


def test_a_socks_proxy_in_the_environment_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    assert environment_proxy("https://api.parallel.ai") is None
