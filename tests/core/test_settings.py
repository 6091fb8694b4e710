"""The one settings object: every ``PARALLEL_*`` variable is read there, and nowhere else in the library."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import parallel_tasks
from parallel_tasks.credentials import resolve_credentials
from parallel_tasks.settings import DEFAULT_BASE_URL, DEFAULT_READ_TIMEOUT, get_settings, openlineage_environment


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PARALLEL_API_KEY", "PARALLEL_BASE_URL", "PARALLEL_READ_TIMEOUT", "PARALLEL_TASKS_DASK_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    settings = get_settings()
    assert settings.api_key is None
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.read_timeout == DEFAULT_READ_TIMEOUT
    assert settings.tasks_dask_address == ""


def test_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_API_KEY", "  key-from-env  ")
    monkeypatch.setenv("PARALLEL_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PARALLEL_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("PARALLEL_MAX_RETRIES", "0")
    credentials = resolve_credentials(None)
    assert credentials.api_key.get_secret_value() == "key-from-env"
    assert (credentials.base_url, credentials.timeout, credentials.max_retries) == ("http://127.0.0.1:9", 2.5, 0)
    monkeypatch.setenv("PARALLEL_API_KEY", " ")
    assert get_settings().api_key is None


def test_unusable_value_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_READ_TIMEOUT", "soon-ish")
    with pytest.raises(ValueError, match="PARALLEL_READ_TIMEOUT") as caught:
        get_settings()
    assert "soon-ish" not in str(caught.value)


def test_no_other_module_reads_the_environment() -> None:
    package = Path(parallel_tasks.__file__).parent
    reads = re.compile(r"os\.environ\.get|os\.environ\[|os\.getenv|environ\.get\(")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "settings.py" and "emulator" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if reads.search(line)
    ]
    assert offenders == []


def test_the_openlineage_clients_variables_are_seen_as_they_are_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", "http://marquez:5000")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("PARALLEL_OPENLINEAGE_TIMEOUT", "0.5")  # ours: a settings field, not the client's
    seen = openlineage_environment()
    assert seen["OPENLINEAGE_URL"] == "http://marquez:5000" and seen["OPENLINEAGE__TRANSPORT__TYPE"] == "http"
    assert all(name.startswith("OPENLINEAGE") for name in seen)
    assert get_settings().openlineage_timeout == 0.5
    monkeypatch.delenv("OPENLINEAGE_URL")
    assert "OPENLINEAGE_URL" not in openlineage_environment()
