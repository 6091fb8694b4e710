"""Our client against Prism, an independent mock server of the official spec (not code we wrote)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parallel_tasks import (
    AsyncParallelClient,
    AuthenticationError,
    NotFoundError,
    ParallelClient,
    TaskRunInput,
    UnprocessableEntityError,
)
from tests.conftest import SPEC_DIR, spec_examples
from tests.prism_server import prism_server

pytestmark = pytest.mark.prism
RUN = "trun_0123456789abcdef0123456789abcdef"
EXAMPLE = next(body for name, _, status, body in spec_examples() if name == "openapi.json" and status == 200)


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    with prism_server(SPEC_DIR / "openapi.json") as base_url:
        yield base_url


def client(base_url: str, key: str | None = "any-key", prefer: str | None = None) -> ParallelClient:
    headers = {"Prefer": prefer} if prefer else None
    return ParallelClient(key, base_url=base_url, max_retries=0, default_headers=headers)


def test_the_200_example_parses(prism_url: str) -> None:
    with client(prism_url) as c:
        run_input = c.get_task_run_input(RUN)
    assert run_input.model_dump(mode="json", exclude_unset=True) == EXAMPLE


def test_no_key_gives_the_401_error(prism_url: str) -> None:
    with client(prism_url, key=None) as c, pytest.raises(AuthenticationError) as caught:
        c.get_task_run_input(RUN)
    assert caught.value.status_code == 401 and caught.value.ref_id == "fcb2b4f3-c75e-4186-87bc-caa1a8381331"
    assert str(caught.value) == (
        f"401 Unauthorized for run '{RUN}': Unauthorized: invalid or missing credentials "
        "(ref_id fcb2b4f3-c75e-4186-87bc-caa1a8381331)"
    )


@pytest.mark.parametrize(
    ("code", "cls", "message"),
    [(404, NotFoundError, "Run id not found"), (422, UnprocessableEntityError, "Request validation error")],
)
def test_prefer_code_gives_the_matching_error(prism_url: str, code: int, cls: type[Exception], message: str) -> None:
    with client(prism_url, prefer=f"code={code}") as c, pytest.raises(cls) as caught:
        c.get_task_run_input(RUN)
    assert caught.value.status_code == code and caught.value.message == message  # type: ignore[attr-defined]


async def test_twenty_dynamic_bodies_all_parse(prism_url: str) -> None:
    async with AsyncParallelClient(
        "any-key", base_url=prism_url, max_retries=0, default_headers={"Prefer": "dynamic=true"}
    ) as c:
        results = await c.get_task_run_inputs([f"{RUN}{i}" for i in range(20)], concurrency=4)
    assert all(isinstance(r.run_input, TaskRunInput) for r in results), [str(r.error) for r in results if r.error]
    processors = {r.unwrap().processor for r in results}
    assert len(processors) > 1  # the bodies really were random
