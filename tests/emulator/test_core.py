"""Request handling: routes, auth, run-id rules, the error envelope, the log and the counters."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from parallel_tasks.emulator import Emulator, RunStore, run_id_problem
from tests.emulator.conftest import API_KEY, BASE, CheckedEmulator, run_path
from tests.emulator.spec import response_problems

DEMO_OK = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"


def test_serves_the_stored_body_byte_for_byte(client: httpx.Client, emulator: CheckedEmulator) -> None:
    response = client.get(run_path(DEMO_OK))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == emulator.store.get(DEMO_OK)
    assert int(response.headers["content-length"]) == len(response.content)


def test_every_generated_and_demo_run_is_served_and_conforms(
    client: httpx.Client, all_runs: dict[str, dict[str, Any]]
) -> None:
    for run_id, body in all_runs.items():
        response = client.get(run_path(run_id))
        assert response.status_code == 200
        assert response.json() == body
        assert not response_problems(200, response.headers["content-type"], response.content)


def test_the_spec_example_run_matches_the_spec_example() -> None:
    from tests.emulator.spec import SPEC_DIR

    spec = json.loads((SPEC_DIR / "openapi.json").read_text())
    example = spec["paths"]["/v1/tasks/runs/{run_id}/input"]["get"]["responses"]["200"]["content"]["application/json"][
        "example"
    ]
    assert Emulator().store.body(DEMO_OK) == example


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "wrong"}, {"authorization": API_KEY}])
def test_missing_or_unknown_key_is_401(emulator: CheckedEmulator, headers: dict[str, str]) -> None:
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as client:
        response = client.get(run_path(DEMO_OK), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Unauthorized: invalid or missing credentials"


def test_any_configured_key_is_accepted(all_runs: dict[str, dict[str, Any]]) -> None:
    emu = Emulator(all_runs, api_keys=["one", "two"])
    for key in ("one", "two"):
        assert emu.handle("GET", run_path(DEMO_OK), {"x-api-key": key}).status == 200


def test_header_lookup_is_case_insensitive_through_httpx(emulator: CheckedEmulator) -> None:
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as client:
        assert client.get(run_path(DEMO_OK), headers={"X-API-KEY": API_KEY}).status_code == 200


def test_unknown_run_is_404_with_the_spec_message(client: httpx.Client) -> None:
    response = client.get(run_path("trun_" + "0" * 32))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Run id not found"


@pytest.mark.parametrize(
    "raw_id",
    ["", "%00", "abc%0Adef", "%7F", "%C2%85", "a" * 257, "%2E", "%2E%2E", "%FF%FE"],
    ids=["empty", "nul", "newline", "del", "c1-control", "too-long", "dot", "dot-dot", "not-utf8"],
)
def test_malformed_run_id_is_422(client: httpx.Client, raw_id: str) -> None:
    response = client.get(f"/v1/tasks/runs/{raw_id}/input")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "Request validation error"
    assert error["detail"]["loc"] == ["path", "run_id"]


@pytest.mark.parametrize("run_id", ["a", "a" * 256, "trun_x y", "ünïcode-id", "id.with.dots", "\u00ad-soft-hyphen"])
def test_odd_but_acceptable_run_ids_are_looked_up(run_id: str) -> None:
    assert run_id_problem(run_id) is None
    emu = Emulator({run_id: {"processor": "base", "input": "q"}}, api_keys=["k"])
    with httpx.Client(transport=emu.transport(), base_url=BASE, headers={"x-api-key": "k"}) as client:
        response = client.get(run_path(httpx.URL(f"/{run_id}").raw_path.decode()[1:]))
    assert response.status_code == 200


def test_percent_encoded_id_is_decoded(client: httpx.Client) -> None:
    assert client.get(run_path(DEMO_OK.replace("_", "%5F"))).status_code == 200


def test_query_string_is_ignored(client: httpx.Client) -> None:
    assert client.get(run_path(DEMO_OK), params={"x": "1"}).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/", "/v1/tasks/runs", "/v1/tasks/runs/input", "/v1/tasks/runs/a/b/input", "/v1/tasks/runs/a/input/"],
)
def test_unknown_paths_are_404_in_the_envelope(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["type"] == "error"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_other_methods_are_405_with_allow(client: httpx.Client, method: str) -> None:
    response = client.request(method, run_path(DEMO_OK))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    if method != "HEAD":
        assert response.json()["type"] == "error"


def test_route_is_checked_before_auth_and_auth_before_the_run_id(emulator: CheckedEmulator) -> None:
    assert emulator.handle("GET", "/elsewhere", {}).status == 404
    assert emulator.handle("POST", run_path(DEMO_OK), {}).status == 405
    assert emulator.handle("GET", "/v1/tasks/runs/%00/input", {}).status == 401


def test_every_error_gets_a_fresh_uuid4_ref_id(client: httpx.Client) -> None:
    ref_ids = [client.get(run_path("nope")).json()["error"]["ref_id"] for _ in range(5)]
    assert len(set(ref_ids)) == 5
    assert all(uuid.UUID(ref).version == 4 for ref in ref_ids)


def test_raw_bytes_in_the_store_are_served_verbatim() -> None:
    emu = Emulator(RunStore({"r": b"not json at all"}), api_keys=["k"])
    plan = emu.handle("GET", run_path("r"), {"x-api-key": "k"})
    assert (plan.status, plan.body) == (200, b"not json at all")


def test_default_emulator_serves_the_demo_set_with_the_default_key() -> None:
    emu = Emulator()
    assert DEMO_OK in emu.store
    assert emu.handle("GET", run_path(DEMO_OK), {"x-api-key": "test-key"}).status == 200


def test_log_and_counters_record_each_request(client: httpx.Client, emulator: CheckedEmulator) -> None:
    client.get(run_path(DEMO_OK))
    client.get(run_path(DEMO_OK))
    client.get(run_path("missing"))
    client.get(run_path(DEMO_OK), headers={"x-api-key": "bad"})
    client.post(run_path(DEMO_OK))
    log = emulator.log
    assert [(r.method, r.run_id, r.status, r.attempt) for r in log] == [
        ("GET", DEMO_OK, 200, 0),
        ("GET", DEMO_OK, 200, 1),
        ("GET", "missing", 404, 0),
        ("GET", None, 401, None),
        ("POST", None, 405, None),
    ]
    assert log[0].path == run_path(DEMO_OK)
    assert log[0].time <= log[-1].time
    assert all(r.fault is None for r in log)
    assert emulator.requests_by_status == {200: 2, 404: 1, 401: 1, 405: 1}
    assert emulator.requests_by_run == {DEMO_OK: 2, "missing": 1}


def test_reset_clears_log_counters_and_attempts(client: httpx.Client, emulator: CheckedEmulator) -> None:
    client.get(run_path(DEMO_OK))
    emulator.reset()
    assert emulator.log == []
    assert not emulator.requests_by_status
    assert not emulator.requests_by_run
    client.get(run_path(DEMO_OK))
    assert emulator.log[0].attempt == 0


def test_log_keeps_only_the_most_recent_entries() -> None:
    emu = Emulator(api_keys=["k"], log_limit=3)
    for index in range(5):
        emu.handle("GET", run_path(f"r{index}"), {"x-api-key": "k"})
    assert [r.run_id for r in emu.log] == ["r2", "r3", "r4"]
    assert sum(emu.requests_by_status.values()) == 5
