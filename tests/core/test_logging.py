"""Structured logging: events with keys, Prefect's run logger inside a run, stdlib elsewhere, redaction."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx
import structlog

from parallel_tasks import ParallelClient, RetryPolicy
from parallel_tasks._logging import LOGGER_NAME, get_logger
from parallel_tasks.redaction import REDACTED
from tests.conftest import CANARY_KEY, spec_examples

GOOD_BODY = next(body for _, _, status, body in spec_examples() if status == 200)
RUN = "trun_0123456789abcdef0123456789abcdef"
URL = f"https://api.parallel.ai/v1/tasks/runs/{RUN}/input"


def mocked_client(*responses: httpx.Response) -> ParallelClient:
    router = respx.Router()
    router.get(URL).mock(side_effect=list(responses))
    client = ParallelClient(
        CANARY_KEY,
        transport=httpx.MockTransport(router.handler),
        retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.001),
    )
    return client


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.parallel_event for r in caplog.records if hasattr(r, "parallel_event")]


def test_events_outside_a_run_go_to_the_stdlib_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    with mocked_client(httpx.Response(503), httpx.Response(200, json=GOOD_BODY)) as client:
        client.get_task_run_input(RUN)
    retry, fetched = events(caplog)
    assert retry["event"] == "parallel.task_run_input.retry"
    assert (retry["run_id"], retry["status"], retry["attempt"]) == (RUN, 503, 1)
    assert isinstance(retry["delay_s"], float)
    assert fetched["event"] == "parallel.task_run_input.fetched"
    assert (fetched["run_id"], fetched["status"], fetched["attempt"]) == (RUN, 200, 2)
    assert isinstance(fetched["elapsed_ms"], float)
    records = [r for r in caplog.records if hasattr(r, "parallel_event")]
    assert {r.name for r in records} == {LOGGER_NAME}
    assert records[0].levelno == logging.WARNING and records[1].levelno == logging.INFO
    assert records[1].getMessage().startswith(f"parallel.task_run_input.fetched run_id={RUN} status=200 attempt=2")


def test_failed_event_carries_the_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    with mocked_client(httpx.Response(404, json={"error": {"ref_id": "r", "message": "Run id not found"}})) as client:
        assert not client.fetch(RUN).ok
    (failed,) = events(caplog)
    assert failed["event"] == "parallel.task_run_input.failed"
    assert failed["status"] == 404 and "Run id not found" in str(failed["error"])


def test_disabled_levels_cost_no_rendering(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    with mocked_client(httpx.Response(200, json=GOOD_BODY)) as client:
        client.get_task_run_input(RUN)
    assert events(caplog) == []


def test_redaction_of_keys_and_of_the_key_in_use(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    log = get_logger(secrets=[CANARY_KEY])
    log.info(
        "custom",
        api_key="plain-value-1",
        headers={"x-api-key": "plain-value-2", "Authorization": "Bearer plain-value-3", "accept": "json"},
        note=f"echo {CANARY_KEY} echo",
    )
    (event,) = events(caplog)
    assert event["api_key"] == REDACTED
    assert event["headers"] == {"x-api-key": REDACTED, "Authorization": REDACTED, "accept": "json"}
    assert event["note"] == f"echo {REDACTED} echo"
    assert "plain-value" not in caplog.text and CANARY_KEY not in caplog.text
    assert CANARY_KEY not in repr(log)


def test_the_library_configures_neither_structlog_nor_logging(caplog: pytest.LogCaptureFixture) -> None:
    root_handlers = list(logging.getLogger().handlers)
    with mocked_client(httpx.Response(200, json=GOOD_BODY)) as client:
        client.get_task_run_input(RUN)
    assert not structlog.is_configured()
    assert logging.getLogger().handlers == root_handlers
    assert logging.getLogger(LOGGER_NAME).handlers == []


@pytest.mark.usefixtures("prefect_harness")
def test_inside_a_flow_events_go_to_the_prefect_run_logger(caplog: pytest.LogCaptureFixture) -> None:
    from prefect import flow, task

    caplog.set_level(logging.INFO)

    @task
    def fetch_in_task() -> str:
        with mocked_client(httpx.Response(503), httpx.Response(200, json=GOOD_BODY)) as client:
            return client.get_task_run_input(RUN).processor

    @flow
    def fetch_in_flow() -> str:
        with mocked_client(httpx.Response(200, json=GOOD_BODY)) as client:
            client.get_task_run_input(RUN)
        return fetch_in_task()

    prefect_logger = logging.getLogger("prefect")  # Prefect's loggers do not propagate to the root
    prefect_logger.addHandler(caplog.handler)
    try:
        assert fetch_in_flow() == "core"
    finally:
        prefect_logger.removeHandler(caplog.handler)
    # A record may reach the handler twice (directly and through the root): count each once.
    records = list({id(r): r for r in caplog.records if hasattr(r, "parallel_event")}.values())
    assert [r.name for r in records] == ["prefect.flow_runs", "prefect.task_runs", "prefect.task_runs"]
    assert all(getattr(r, "flow_run_id", None) for r in records)
    assert getattr(records[1], "task_run_id", None) and records[1].parallel_event["event"].endswith(".retry")
    assert CANARY_KEY not in caplog.text
