"""Where the receiver's secrets come from: the environment, a ParallelCredentials block, a Secret block."""

from __future__ import annotations

import uuid

import pytest
from prefect.blocks.system import Secret
from pydantic import SecretStr

from parallel_tasks import ParallelCredentials
from parallel_tasks.credentials import resolve_webhook_secrets, webhook_key
from parallel_tasks.errors import MissingCredentialsError
from parallel_tasks.server_setup import main
from parallel_tasks.settings import get_settings
from tests.webhooks.conftest import CANARY_SECRET


def revealed(secrets: tuple[SecretStr, ...]) -> list[bytes]:
    return [webhook_key(s) for s in secrets]


def test_the_environment_holds_one_or_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_WEBHOOK_SECRET", f"  {CANARY_SECRET}  whsec_next ")
    assert revealed(resolve_webhook_secrets()) == [CANARY_SECRET.encode(), b"whsec_next"]
    assert CANARY_SECRET not in repr(resolve_webhook_secrets())
    monkeypatch.setenv("PARALLEL_WEBHOOK_SECRET", " ")
    with pytest.raises(MissingCredentialsError, match="PARALLEL_WEBHOOK_SECRET"):
        resolve_webhook_secrets()


def test_the_setting_keeps_it_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_WEBHOOK_SECRET", CANARY_SECRET)
    settings = get_settings()
    assert isinstance(settings.webhook_secret, SecretStr)
    shown = (repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json())
    assert not [text for text in shown if CANARY_SECRET in text]


def test_blocks_hold_them(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLEL_WEBHOOK_SECRET", raising=False)
    name = f"hooks-{uuid.uuid4().hex[:6]}"
    ParallelCredentials(api_key=SecretStr("k"), webhook_secret=SecretStr(CANARY_SECRET)).save(name)
    assert revealed(resolve_webhook_secrets(name)) == [CANARY_SECRET.encode()]
    Secret(value=[CANARY_SECRET, "whsec_old"]).save(f"{name}-rotating")
    assert revealed(resolve_webhook_secrets(f"{name}-rotating")) == [CANARY_SECRET.encode(), b"whsec_old"]
    ParallelCredentials(api_key=SecretStr("k")).save(f"{name}-none")
    with pytest.raises(MissingCredentialsError, match="No webhook secret"):
        resolve_webhook_secrets(f"{name}-none")
    with pytest.raises(MissingCredentialsError, match="No block is named 'absent'"):
        resolve_webhook_secrets("absent")


def test_the_command_refuses_to_start_without_a_secret(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PARALLEL_WEBHOOK_SECRET", raising=False)
    assert main(["webhooks", "serve", "--port", "0"]) == 1
    assert "PARALLEL_WEBHOOK_SECRET" in capsys.readouterr().err
