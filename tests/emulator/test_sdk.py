"""The official parallel-web SDK, a client we did not write, reads the emulator like the real API."""

from __future__ import annotations

from typing import Any

import httpx
import parallel
import pytest
from parallel import AsyncParallel, Parallel

from parallel_tasks.emulator import FaultConfig, run_emulator_server
from tests.emulator.conftest import API_KEY, BASE, CheckedEmulator

RUN = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"


def sdk(emulator: CheckedEmulator, api_key: str = API_KEY) -> Parallel:
    return Parallel(
        api_key=api_key,
        base_url=BASE,
        max_retries=0,
        http_client=httpx.Client(transport=emulator.transport()),
    )


def as_sent(sdk_model: Any) -> dict[str, Any]:
    """The SDK's parsed model back as the JSON it was parsed from."""
    return sdk_model.to_dict(mode="json", exclude_unset=True)  # type: ignore[no-any-return]


def test_sdk_parses_every_generated_and_demo_run(
    emulator: CheckedEmulator, all_runs: dict[str, dict[str, Any]]
) -> None:
    with sdk(emulator) as client:
        for run_id, body in all_runs.items():
            run_input = client.task_run.retrieve_input(run_id)
            assert as_sent(run_input) == body, run_id
            assert run_input.processor == body["processor"]
    assert emulator.requests_by_status == {200: len(all_runs)}


def test_sdk_sees_the_newer_fields_and_the_secret_headers(emulator: CheckedEmulator) -> None:
    with sdk(emulator) as client:
        run_input = client.task_run.retrieve_input("trun_c65bdf4253cd1c336f522f2967103ca0")
    assert run_input.mcp_servers is not None and run_input.mcp_servers[0].headers is not None
    assert run_input.mcp_servers[0].headers["Authorization"].startswith("Bearer ")
    assert run_input.webhook is not None and run_input.webhook.event_types == ["task_run.status"]
    assert run_input.advanced_settings is not None and run_input.advanced_settings.location == "gb"


@pytest.mark.parametrize(
    ("api_key", "run_id", "error"),
    [
        ("wrong-key", RUN, parallel.AuthenticationError),
        (API_KEY, "trun_" + "f" * 32, parallel.NotFoundError),
        (API_KEY, "a" * 300, parallel.UnprocessableEntityError),
    ],
)
def test_sdk_raises_its_own_error_classes(
    emulator: CheckedEmulator, api_key: str, run_id: str, error: type[parallel.APIStatusError]
) -> None:
    with sdk(emulator, api_key) as client, pytest.raises(error) as raised:
        client.task_run.retrieve_input(run_id)
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["ref_id"]  # type: ignore[index]


def test_sdk_raises_for_permanent_statuses_and_control_characters(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(status=404), run_id=RUN)
    with sdk(emulator) as client:
        with pytest.raises(parallel.NotFoundError):
            client.task_run.retrieve_input(RUN)
        with pytest.raises(parallel.UnprocessableEntityError):
            client.task_run.retrieve_input("bad\x01id")
        emulator.set_faults(FaultConfig(status=503), run_id=RUN)
        with pytest.raises(parallel.InternalServerError):
            client.task_run.retrieve_input(RUN)
        emulator.set_faults(FaultConfig(script=["reset"]), run_id=RUN)
        with pytest.raises(parallel.APIConnectionError):
            client.task_run.retrieve_input(RUN)


async def test_async_sdk_over_the_async_transport(
    emulator: CheckedEmulator, generated: dict[str, dict[str, Any]]
) -> None:
    http_client = httpx.AsyncClient(transport=emulator.async_transport())
    async with AsyncParallel(api_key=API_KEY, base_url=BASE, max_retries=0, http_client=http_client) as client:
        for run_id, body in list(generated.items())[:50]:
            assert as_sent(await client.task_run.retrieve_input(run_id)) == body
        with pytest.raises(parallel.NotFoundError):
            await client.task_run.retrieve_input("trun_missing")


def test_sdk_against_the_real_server(emulator: CheckedEmulator) -> None:
    with (
        run_emulator_server(emulator) as base_url,
        Parallel(api_key=API_KEY, base_url=base_url, max_retries=0) as client,
    ):
        assert as_sent(client.task_run.retrieve_input(RUN)) == emulator.store.body(RUN)
        emulator.set_faults(FaultConfig(status=422), run_id=RUN)
        with pytest.raises(parallel.UnprocessableEntityError):
            client.task_run.retrieve_input(RUN)
