"""A distinctive fake key goes through every path of the client and is never seen again."""

from __future__ import annotations

import asyncio
import logging
import pickle
import traceback

import httpx
import pytest
import respx

from parallel_tasks import AsyncParallelClient, ParallelCredentials, RetryPolicy
from parallel_tasks._logging import LOGGER_NAME
from tests.conftest import CANARY_KEY, spec_examples

GOOD_BODY = next(body for _, _, status, body in spec_examples() if status == 200)
RUN = "trun_0123456789abcdef0123456789abcdef"
URL = f"https://api.parallel.ai/v1/tasks/runs/{RUN}/input"


def echo_key(message: str) -> dict[str, object]:
    """A hostile or buggy server that echoes the key it received in its error body."""
    return {
        "type": "error",
        "error": {"ref_id": CANARY_KEY, "message": f"{message} {CANARY_KEY}", "detail": {"k": CANARY_KEY}},
    }


SCENARIOS = {
    "success": [httpx.Response(200, json=GOOD_BODY)],
    "retries-then-success": [
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(200, json=GOOD_BODY),
    ],
    **{
        f"status-{s}": [httpx.Response(s, json=echo_key("denied"))] * 4
        for s in (400, 401, 402, 403, 404, 408, 409, 422, 429, 500, 502, 503)
    },
    "html": [httpx.Response(502, text=f"<html><title>{CANARY_KEY}</title></html>")] * 4,
    "bad-json-200": [httpx.Response(200, text=f'{{"processor": "{CANARY_KEY}')] * 4,
    "schema-200": [httpx.Response(200, json={"processor": CANARY_KEY})],
    "redirect": [httpx.Response(307, headers={"location": f"https://evil.example/?k={CANARY_KEY}"})],
    "timeout": [httpx.ReadTimeout(f"read timed out {CANARY_KEY}")] * 4,
    "reset": [httpx.RemoteProtocolError(f"peer closed {CANARY_KEY}")] * 4,
}


def outputs_of(error: BaseException | None) -> list[str]:
    if error is None:
        return []
    return [
        str(error),
        repr(error),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        repr(pickle.loads(pickle.dumps(error)).__dict__),
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_canary_never_leaks_from_the_sync_client(
    scenario: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    router = respx.Router()
    route = router.get(URL).mock(side_effect=list(SCENARIOS[scenario]))
    block = ParallelCredentials(api_key=CANARY_KEY)
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0)
    with block.get_client(transport=httpx.MockTransport(router.handler), retry_policy=policy) as client:
        result = client.fetch(RUN)
    assert route.calls.last.request.headers["x-api-key"] == CANARY_KEY  # the key was really used
    captured = capsys.readouterr()
    for text in [caplog.text, captured.out, captured.err, *outputs_of(result.error), repr(result)]:
        assert CANARY_KEY not in text
    assert any(r.name == LOGGER_NAME for r in caplog.records)


@pytest.mark.parametrize("scenario", ["retries-then-success", "status-404", "timeout", "reset"])
def test_canary_never_leaks_from_the_async_client(scenario: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    router = respx.Router()
    router.get(URL).mock(side_effect=list(SCENARIOS[scenario]))

    async def run() -> BaseException | None:
        async with AsyncParallelClient(
            CANARY_KEY,
            transport=httpx.MockTransport(router.handler),
            retry_policy=RetryPolicy(initial_delay=0.0, max_delay=0.0),
        ) as client:
            try:
                await client.get_task_run_input(RUN)
            except Exception as error:
                return error
        return None

    error = asyncio.run(run())
    for text in [caplog.text, *outputs_of(error)]:
        assert CANARY_KEY not in text


def test_clients_and_blocks_do_not_show_the_key() -> None:
    block = ParallelCredentials(api_key=CANARY_KEY)
    for shown in (
        repr(block),
        str(block),
        block.model_dump_json(),
        repr(block.get_client()),
        repr(block.get_async_client()),
    ):
        assert CANARY_KEY not in shown
