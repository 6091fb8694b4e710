"""The redaction policy, one leak class per test: what a record, its findings, its markdown and table,
its event payload and a failure's error text may never hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from parallel_tasks import ParallelCredentials, TaskRunInput
from parallel_tasks.errors import APIStatusError
from parallel_tasks.lineage import (
    build_failure_record,
    build_record,
    canonical_json,
    event_payload,
    metadata_table,
    render_markdown,
    sha256_hex,
    verify_record,
)
from parallel_tasks.models import RunInputRecord
from parallel_tasks.records import sealed
from parallel_tasks.redaction import REDACTED, SENSITIVE_KEYS_ENV_VAR, is_sensitive_key, redact_text
from parallel_tasks.validation import check_task_run_input
from tests.conftest import CANARY_KEY

RUN = "trun_4edac7ed000000000000000000000001"


def record_of(body: dict[str, Any], secrets: tuple[str, ...] = ()) -> RunInputRecord:
    run_input = TaskRunInput.model_validate(body)
    return build_record(RUN, run_input, check_task_run_input(run_input), base_url="http://x", secrets=secrets)


def everything_shown(record: RunInputRecord) -> str:
    """Every text a record reaches: stored JSON, markdown artifact, table artifact, event payload."""
    return "\n".join(
        [
            canonical_json(record.model_dump(mode="json")).decode(),
            render_markdown(record),
            json.dumps(metadata_table(record)),
            json.dumps(event_payload(record)),
        ]
    )


def test_credential_keys_are_masked_at_any_depth() -> None:
    record = record_of(
        {
            "processor": "core",
            "input": {"api_key": "canary-top-level", "order": {"items": [{"password": "canary-nested"}]}},
            "metadata": {"passphrase": "canary-passphrase", "team": "audit"},
        }
    )
    shown = everything_shown(record)
    assert "canary-" not in shown
    assert record.redacted_paths == (
        "$.input.api_key",
        "$.input.order.items[0].password",
        "$.metadata.passphrase",
    )
    assert record.input is not None and record.input["metadata"] == {"passphrase": REDACTED, "team": "audit"}


def test_the_key_in_use_is_masked_in_any_case_and_when_cut() -> None:
    body = {
        "processor": "core",
        "input": f"upper {CANARY_KEY.upper()} and cut {CANARY_KEY[:9]}",
        "metadata": {"ref": CANARY_KEY[:20]},
    }
    record = record_of(body, secrets=(CANARY_KEY,))
    shown = everything_shown(record).lower()
    assert CANARY_KEY[:8].lower() not in shown
    assert record.redacted_paths == ("$.input", "$.metadata.ref")
    assert record.input is not None and record.input["input"] == f"upper {REDACTED} and cut {REDACTED}"
    # Seven characters are not a key: ordinary text keeps them.
    assert redact_text(f"id {CANARY_KEY[:7]}", [CANARY_KEY]) == f"id {CANARY_KEY[:7]}"


@pytest.mark.usefixtures("prefect_harness")
def test_the_record_task_is_given_the_key_in_use(tmp_path: Path) -> None:
    from parallel_tasks.tasks import record_task_run_input_lineage

    run_input = TaskRunInput.model_validate({"processor": "core", "input": f"echoed {CANARY_KEY}"})
    record = record_task_run_input_lineage.fn(
        RUN,
        run_input,
        check_task_run_input(run_input),
        storage=tmp_path,
        artifacts=False,
        credentials=ParallelCredentials(api_key=CANARY_KEY),
    )
    assert record.input == {"processor": "core", "input": f"echoed {REDACTED}"}
    assert not [path for path in tmp_path.rglob("*.json") if CANARY_KEY.encode() in path.read_bytes()]


def test_credentials_in_urls_are_masked() -> None:
    record = record_of(
        {
            "processor": "core",
            "input": "see https://user:canary-userinfo@files.example/x?token=canary-query&page=2",
            "mcp_servers": [
                {"name": "m", "url": "https://u:canary-mcp@mcp.example/sse?api_key=canary-mcp-q", "headers": {}}
            ],
            "webhook": {"url": "https://hooks.example/in?sig=canary-webhook&x=1"},
        }
    )
    assert "canary-" not in everything_shown(record)
    assert record.input is not None
    assert record.input["webhook"]["url"] == f"https://hooks.example/in?sig={REDACTED}&x=1"
    assert record.input["mcp_servers"][0]["url"] == f"https://{REDACTED}@mcp.example/sse?api_key={REDACTED}"
    assert record.redacted_paths == ("$.input", "$.mcp_servers[0].url", "$.webhook.url")


def test_findings_about_a_redacted_value_do_not_quote_it() -> None:
    long_secret = "canary-long-" + "x" * 588  # 600 characters: too long for metadata, so it is previewed
    record = record_of(
        {
            "processor": "core",
            "input": {"api_key": "canary-typed"},
            "metadata": {"api_key": long_secret},
            "task_spec": {
                "input_schema": {
                    "type": "json",
                    "json_schema": {"type": "object", "properties": {"api_key": {"type": "integer"}}},
                },
                "output_schema": "text",
            },
        }
    )
    rules = {v.rule: v for v in record.violations}
    assert set(rules) >= {"metadata.value_too_long", "input.schema_mismatch"}  # the findings are kept
    assert "is not of type 'integer'" in rules["input.schema_mismatch"].message  # the schema is not masked
    assert rules["metadata.value_too_long"].preview == REDACTED
    assert "canary-" not in everything_shown(record)


def test_a_failure_record_does_not_quote_a_secret_from_the_response() -> None:
    body = f'{{"password": "canary-body", "echo": "{CANARY_KEY.upper()}"}}'
    error = APIStatusError(f"Bad request: {body}", status_code=400, run_id=RUN)
    record = build_failure_record(RUN, error, base_url="http://x", secrets=(CANARY_KEY,))
    shown = everything_shown(record)
    assert "canary-body" not in shown and CANARY_KEY[:8].upper() not in shown
    assert record.error is not None and "Bad request" in record.error


def test_users_can_add_sensitive_key_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"processor": "core", "input": "q", "metadata": {"customer_ssn": "123-45-6789", "clientId": "c-1"}}
    assert record_of(body).redacted_paths == ()
    monkeypatch.setenv(SENSITIVE_KEYS_ENV_VAR, " ssn , client id ")
    assert is_sensitive_key("X-Client-Id") and not is_sensitive_key("client")
    record = record_of(body)
    assert record.redacted_paths == ("$.metadata.clientId", "$.metadata.customer_ssn")
    assert "123-45-6789" not in everything_shown(record)


def test_the_hash_is_over_what_is_stored_and_old_records_still_verify() -> None:
    record = record_of({"processor": "core", "input": {"token": "canary-t"}})
    assert verify_record(sealed(record)[1]).redacted_paths == ("$.input.token",)
    assert record.sha256 == sha256_hex(canonical_json(record.input))
    old = json.loads(canonical_json(record.model_dump(mode="json")))  # version 1, without a whole-record hash
    del old["redacted_paths"]  # a record written before the field existed
    assert verify_record(json.dumps(old), allow_legacy=True).redacted_paths == ()  # version 1: input hash only


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("a" * 400_000 + " ://x", id="long word before a scheme separator"),
        pytest.param("a" * 400_000 + " =x", id="long word before a key separator"),
        pytest.param("a." * 200_000 + " :x", id="long dotted word before a key separator"),
    ],
)
def test_a_long_word_is_masked_in_linear_time(hostile: str) -> None:
    # The unbounded patterns retried from every character of the word: this text took hours; now well under a second.
    message = f"{hostile} password=hunter2-{CANARY_KEY[:12]}"
    masked = redact_text(message, [CANARY_KEY])
    assert "hunter2" not in masked and masked.startswith(hostile[:1000])


def test_a_masked_value_is_not_masked_twice() -> None:
    masked = redact_text("https://u:p@h/x?token=abc then api_key=[REDACTED] and pw=[REDACTED]", [CANARY_KEY])
    assert masked == f"https://{REDACTED}@h/x?token={REDACTED} then api_key={REDACTED} and pw={REDACTED}"


def test_the_webhook_secrets_kept_with_the_key_are_masked_too() -> None:
    credentials = ParallelCredentials(api_key=CANARY_KEY, webhook_secret="whsec-old-5a6b7c8d whsec-new-9e0f1a2b")
    assert credentials.secrets_in_use() == (CANARY_KEY, "whsec-old-5a6b7c8d", "whsec-new-9e0f1a2b")
    masked = redact_text("echoed whsec-new-9e0f1a2b back", credentials.secrets_in_use())
    assert masked == f"echoed {REDACTED} back"
