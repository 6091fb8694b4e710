"""OpenLineage events of the example flows, received over real HTTP on loopback through the client's own
HttpTransport, each checked against the OpenLineage spec and the schema of every facet it carries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

import parallel_tasks.openlineage as ol
from parallel_tasks import ParallelCredentials
from parallel_tasks.emulator import Emulator
from parallel_tasks.flows import audit_run_inputs, fetch_run_input
from parallel_tasks.records import RECORD_PREFIX, latest_key
from tests.conftest import CANARY_KEY
from tests.flows.openlineage_support import Receiver, free_port, schema_errors

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
BAD_METADATA = "trun_89109e16101e7e3e169bfab28d7fa15b"


@pytest.fixture
def lineage_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OpenLineage configuration but what the test sets; a generous budget for a busy machine."""
    import os

    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(ol.TIMEOUT_ENV_VAR, "60")
    yield monkeypatch


@pytest.fixture
def receiver(lineage_env: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with Receiver("ok") as backend:
        lineage_env.setenv("OPENLINEAGE_URL", backend.url)
        yield backend


def valid_events(backend: Receiver) -> list[dict[str, Any]]:
    events = backend.events
    for event in events:
        assert schema_errors(event) == [], event["eventType"]
    return events


def flow_run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


class PrefectWarnings(logging.Handler):
    """Warnings the flow run logger wrote (Prefect's loggers do not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def flow_warnings() -> Iterator[list[str]]:
    handler = PrefectWarnings()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_fetch_flow_sends_start_and_complete_with_the_input(
    receiver: Receiver, credentials_block: str, storage: tuple[str, Path]
) -> None:
    slug, folder = storage
    state = fetch_run_input(GOOD, credentials_block=credentials_block, storage_block=slug, return_state=True)
    assert state.is_completed()
    summary = state.result()
    events = valid_events(receiver)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert receiver.paths == ["/api/v1/lineage"] * 2  # the client's HttpTransport, its default endpoint
    assert {e["run"]["runId"] for e in events} == {flow_run_id(state)}
    assert {(e["job"]["namespace"], e["job"]["name"]) for e in events} == {("default", "fetch-run-input")}
    job_type = events[0]["job"]["facets"]["jobType"]
    assert (job_type["integration"], job_type["processingType"]) == ("PREFECT", "BATCH")

    (dataset,) = events[1]["inputs"]
    port = credentials_port(credentials_block)
    assert (dataset["namespace"], dataset["name"]) == (f"parallel://127.0.0.1:{port}", f"tasks/runs/{GOOD}/input")
    assert dataset["facets"]["version"]["datasetVersion"] == summary["sha256"]
    custom = dataset["facets"]["parallelRunInput"]
    assert (custom["processor"], custom["verdict"], custom["recordKey"]) == ("core", "valid", summary["record_key"])
    assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["assertion"] for a in assertions} == set(ol.RULE_FAMILIES) and all(a["success"] for a in assertions)

    (output,) = events[1]["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(folder.absolute() / RECORD_PREFIX))
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 1
    assert (folder / summary["record_key"]).is_file()


def credentials_port(block: str) -> int:
    return int(ParallelCredentials.load(block).base_url.rsplit(":", 1)[1].strip("/"))


def test_an_invalid_input_reports_each_rule_result(
    receiver: Receiver, credentials_block: str, storage: tuple[str, Path]
) -> None:
    state = fetch_run_input(BAD_METADATA, credentials_block=credentials_block, storage_block=storage[0])
    assert state["verdict"] == "invalid"
    (dataset,) = valid_events(receiver)[-1]["inputs"]
    assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
    by_name = {a["assertion"]: a for a in assertions}
    assert by_name["metadata"]["success"] is False and by_name["metadata"]["severity"] == "error"
    assert by_name["processor"]["success"] is True
    finding = by_name["metadata.key_too_long"]
    assert (finding["success"], finding["column"]) == (False, "$.metadata.customer_reference_id")
    assert dataset["facets"]["parallelRunInput"]["errors"] >= 1


def test_a_failed_fetch_sends_fail_with_the_error(receiver: Receiver, credentials_block: str) -> None:
    state = fetch_run_input("trun_gone", credentials_block=credentials_block, return_state=True)
    assert state.is_failed()
    events = valid_events(receiver)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert "NotFoundError" in events[1]["run"]["facets"]["errorMessage"]["message"]
    assert events[1]["inputs"] == []  # an input that could not be read is no input


def test_audit_sends_inputs_in_bounded_running_events(
    receiver: Receiver,
    credentials_block: str,
    storage: tuple[str, Path],
    clean_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ol, "INPUTS_PER_EVENT", 25)
    run_ids = clean_emulator.store.ids()[:60]
    state = audit_run_inputs(
        run_ids=run_ids, credentials_block=credentials_block, storage_block=storage[0], return_state=True
    )
    summary = state.result(raise_on_failure=False)
    events = valid_events(receiver)
    types = [e["eventType"] for e in events]
    assert types == ["START", "RUNNING", "RUNNING", "COMPLETE"], types
    assert [len(e["inputs"]) for e in events] == [0, 25, 25, 10]
    names = [d["name"] for e in events for d in e["inputs"]]
    assert len(set(names)) == 60 == summary.total
    assert {e["job"]["name"] for e in events} == {"audit-run-inputs"}
    assert events[-1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 60


def test_a_returned_failed_state_is_fail(receiver: Receiver, credentials_block: str) -> None:
    state = audit_run_inputs(run_ids=[GOOD, "trun_gone"], credentials_block=credentials_block, return_state=True)
    assert state.is_failed()
    final = valid_events(receiver)[-1]
    assert final["eventType"] == "FAIL"
    assert "could not be fetched" in final["run"]["facets"]["errorMessage"]["message"]
    assert [d["name"] for d in final["inputs"]] == [f"tasks/runs/{GOOD}/input"]


def test_a_flow_run_started_by_another_names_its_parent(receiver: Receiver, credentials_block: str) -> None:
    @flow(name="lineage-parent")
    def parent() -> str:
        audit_run_inputs(run_ids=[GOOD], credentials_block=credentials_block)
        from prefect.runtime import flow_run

        return str(flow_run.id)

    parent_id = parent()
    events = valid_events(receiver)
    assert events and all(e["job"]["name"] == "audit-run-inputs" for e in events)
    for event in events:
        facet = event["run"]["facets"]["parent"]
        assert facet["run"]["runId"] == parent_id
        assert facet["job"] == {"namespace": "default", "name": "lineage-parent"}


def test_no_events_when_turned_off_by_the_flow_parameter(receiver: Receiver, credentials_block: str) -> None:
    fetch_run_input(GOOD, credentials_block=credentials_block, openlineage=False)
    audit_run_inputs(run_ids=[GOOD], credentials_block=credentials_block, openlineage=False)
    fetch_run_input(GOOD, credentials_block=credentials_block)  # the backend does work
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]


@pytest.mark.parametrize("openlineage", [True, False])
def test_an_audit_hands_its_openlineage_parameter_to_its_chunks(
    openlineage: bool, lineage_env: pytest.MonkeyPatch, credentials_block: str
) -> None:
    chunks: list[dict[str, Any]] = []

    def audit_in_chunks(
        run_ids: list[str], chunk_size: int, deployment: str, parameters: Any, base_url: str, *rest: Any
    ) -> None:
        # the chunks' flow runs need a worker; what they would be started with is what counts here
        chunks.extend(parameters.for_chunk(run_ids[i : i + chunk_size]) for i in range(0, len(run_ids), chunk_size))

    lineage_env.setattr("parallel_tasks.flows.audit_in_chunks", audit_in_chunks)
    audit_run_inputs(
        run_ids=[GOOD, BAD_METADATA], chunk_size=1, credentials_block=credentials_block, openlineage=openlineage
    )
    assert [chunk["openlineage"] for chunk in chunks] == [openlineage, openlineage]


def test_the_canary_key_and_mcp_header_values_never_reach_the_backend(
    receiver: Receiver, emulator_url: str, clean_emulator: Emulator, storage: tuple[str, Path]
) -> None:
    run_id = "trun_ca0a2700000000000000000000000001"
    header_values = [f"Bearer {CANARY_KEY}", "mcp-header-secret-5150"]
    clean_emulator.store.add(
        run_id,
        {
            "processor": "base",
            "input": f"What does {CANARY_KEY} unlock?",
            "metadata": {"api_key": CANARY_KEY, "team": "audit"},
            "mcp_servers": [
                {"url": "https://mcp.example.com/sse", "name": "crm", "headers": {"Authorization": header_values[0]}},
                {"url": "https://mcp.example.net/mcp", "name": "dw", "headers": {"X-Api-Key": header_values[1]}},
            ],
        },
    )
    ParallelCredentials(api_key=CANARY_KEY, base_url=emulator_url).save("lineage-canary", overwrite=True)
    fetched = fetch_run_input(run_id, credentials_block="lineage-canary", storage_block=storage[0], return_state=True)
    audit = audit_run_inputs(
        run_ids=[run_id, GOOD, "trun_gone"],
        credentials_block="lineage-canary",
        storage_block=storage[0],
        return_state=True,
    )
    assert fetched.is_completed() and audit.is_failed()
    assert len(receiver.bodies) >= 4
    seen = [body.decode() for body in receiver.bodies] + [repr(headers) for headers in receiver.headers]
    for secret in [CANARY_KEY, *header_values, "mcp-header-secret"]:
        assert not [text for text in seen if secret in text], secret


@pytest.mark.parametrize("backend", ["down", "error"])
def test_a_broken_backend_leaves_records_and_state_unchanged(
    backend: str,
    lineage_env: pytest.MonkeyPatch,
    credentials_block: str,
    storage: tuple[str, Path],
    clean_emulator: Emulator,
    flow_warnings: list[str],
) -> None:
    slug, folder = storage
    run_ids = clean_emulator.store.ids()[:30]
    with Receiver("error") as failing:
        url = failing.url if backend == "error" else f"http://127.0.0.1:{free_port()}"
        lineage_env.setenv("OPENLINEAGE_URL", url)
        state = audit_run_inputs(
            run_ids=run_ids, credentials_block=credentials_block, storage_block=slug, return_state=True
        )
        assert len(failing.bodies) == (1 if backend == "error" else 0)  # refused once: the rest is dropped

    lineage_env.delenv("OPENLINEAGE_URL")
    quiet = audit_run_inputs(
        run_ids=run_ids, credentials_block=credentials_block, storage_block=slug, return_state=True
    )
    # Each audit writes its own manifest (its hash ends the message); what the audit says before it is the same.
    said, said_quietly = (str(s.message).partition("; manifest sha256 ") for s in (state, quiet))
    assert state.type == quiet.type and said[0] == said_quietly[0] and said[2] and said_quietly[2]
    assert all((folder / latest_key(run_id)).is_file() for run_id in run_ids)
    assert len([m for m in flow_warnings if m.startswith("OpenLineage")]) == 1


def test_a_backend_that_never_answers_costs_only_the_budget(
    lineage_env: pytest.MonkeyPatch, credentials_block: str, storage: tuple[str, Path], flow_warnings: list[str]
) -> None:
    slug, folder = storage
    with Receiver("hang") as hanging:
        # Configured through OPENLINEAGE__TRANSPORT__* with a long timeout of its own: the budget still bounds it.
        lineage_env.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
        lineage_env.setenv("OPENLINEAGE__TRANSPORT__URL", hanging.url)
        lineage_env.setenv("OPENLINEAGE__TRANSPORT__TIMEOUT", "600")
        lineage_env.setenv(ol.TIMEOUT_ENV_VAR, "0.5")
        state = fetch_run_input(GOOD, credentials_block=credentials_block, storage_block=slug, return_state=True)
        # The flow run ended while the backend still held the START event unanswered.
        assert hanging.held == 1 and not hanging.release.is_set()
    assert state.is_completed()
    assert (folder / state.result()["record_key"]).is_file()
    (warning,) = [m for m in flow_warnings if m.startswith("OpenLineage")]
    # Whichever bound fires first (the request's capped timeout, or the wait at the end), both events are lost.
    assert warning.startswith("OpenLineage: 2 of 2 events for this flow run were not sent")


def test_unconfigured_means_no_client_at_all(
    lineage_env: pytest.MonkeyPatch, credentials_block: str, tmp_path: Path
) -> None:
    lineage_env.setenv("HOME", str(tmp_path))
    lineage_env.chdir(tmp_path)
    assert not ol.is_configured()

    built: list[object] = []
    lineage_env.setattr("openlineage.client.OpenLineageClient", lambda *a, **k: built.append(a))
    assert fetch_run_input(GOOD, credentials_block=credentials_block)["status"] == "ok"
    assert built == []  # no client, so not the console transport it falls back on either
