"""The Prism fixture starts and stops the pinned mock server; Prism and the emulator agree on the example."""

from __future__ import annotations

import httpx
import pytest

from parallel_tasks.emulator import Emulator
from tests.emulator.spec import SPEC_DIR, response_problems
from tests.prism_server import prism_server

pytestmark = pytest.mark.prism

PATH = "/v1/tasks/runs/trun_bbf5d6d60a5a8aca6d19f35c5426fab0/input"


def test_prism_serves_the_spec_example_the_emulator_serves_too() -> None:
    with prism_server(SPEC_DIR / "openapi.json") as base_url:
        example = httpx.get(base_url + PATH, headers={"x-api-key": "k"})
        missing_key = httpx.get(base_url + PATH)
        not_found = httpx.get(base_url + PATH, headers={"x-api-key": "k", "Prefer": "code=404"})
    assert example.status_code == 200
    assert example.json() == Emulator().store.body("trun_bbf5d6d60a5a8aca6d19f35c5426fab0")
    assert missing_key.status_code == 401
    assert not response_problems(401, missing_key.headers["content-type"], missing_key.content)
    assert not_found.status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + PATH, headers={"x-api-key": "k"})
