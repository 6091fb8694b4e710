"""Signature verification: the scheme Parallel uses, every way a delivery can be wrong, and properties."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from parallel_tasks.webhooks import DeliveryRefused, WebhookVerifier, event_id_for
from tests.webhooks.conftest import CANARY_SECRET, RUN, parallel_signature, signed_headers, task_run_body

OLD_SECRET = "whsec_old-secret-0b9e6c2a"
VERIFIER = WebhookVerifier([SecretStr(CANARY_SECRET)])
BODY = task_run_body()


def refused(headers: dict[str, str], body: bytes | str, verifier: WebhookVerifier = VERIFIER) -> int:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(DeliveryRefused) as caught:
        verifier.verify(headers, raw)
    return caught.value.status


def test_a_delivery_signed_as_parallel_signs_it_is_accepted() -> None:
    """Pins the scheme: the key is the secret's UTF-8 bytes, not the base64 decoding of what follows whsec_."""
    headers = signed_headers(BODY)
    delivery = VERIFIER.verify(headers, BODY.encode())
    assert delivery.webhook_id == headers["webhook-id"]
    assert delivery.data is not None and delivery.data["run_id"] == RUN and delivery.data["status"] == "completed"

    # The other reading of a whsec_ secret (base64-decoded key, as some senders use) must not verify.
    decoded_key = base64.b64decode(CANARY_SECRET.removeprefix("whsec_") + "==")
    import hashlib
    import hmac

    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    other = hmac.new(decoded_key, f"{webhook_id}.{timestamp}.{BODY}".encode(), hashlib.sha256).digest()
    assert refused({**headers, "webhook-signature": f"v1,{base64.b64encode(other).decode()}"}, BODY) == 401


def test_rotation_accepts_either_secret_and_any_matching_entry() -> None:
    rotating = WebhookVerifier([SecretStr(OLD_SECRET), SecretStr(CANARY_SECRET)])
    assert rotating.verify(signed_headers(BODY, OLD_SECRET), BODY.encode()).data is not None
    assert rotating.verify(signed_headers(BODY, CANARY_SECRET), BODY.encode()).data is not None
    # The sender, mid-rotation, signs with both: one header, two entries; a receiver knowing either accepts.
    headers = signed_headers(BODY, OLD_SECRET)
    new = parallel_signature("whsec_newest-1f2e", headers["webhook-id"], headers["webhook-timestamp"], BODY)
    headers["webhook-signature"] = f"v1,{new} {headers['webhook-signature']}"
    assert VERIFIER.verify(signed_headers(BODY), BODY.encode()).data is not None
    assert rotating.verify(headers, BODY.encode()).data is not None
    assert refused(headers, BODY) == 401  # only the old secret's entry matches, and VERIFIER has only the new one


@pytest.mark.parametrize("malformed", ["v1a", "v1,abc", "v2,x,y", "", "v1,!!!not-base64!!!"])
def test_a_malformed_entry_does_not_hide_a_valid_one_after_it(malformed: str) -> None:
    headers = signed_headers(BODY)
    headers["webhook-signature"] = f"{malformed} {headers['webhook-signature']}"
    assert VERIFIER.verify(headers, BODY.encode()).data is not None
    assert refused({**headers, "webhook-signature": malformed or " "}, BODY) == 401


def _drop(name: str) -> dict[str, str]:
    headers = signed_headers(BODY)
    del headers[name]
    return headers


def _with(name: str, value: str) -> dict[str, str]:
    return {**signed_headers(BODY), name: value}


def _resigned(**changes: str) -> dict[str, str]:
    """Headers whose signature is right for the changed id or timestamp (so only the change is wrong)."""
    headers = {**signed_headers(BODY), **changes}
    signature = parallel_signature(CANARY_SECRET, headers["webhook-id"], headers["webhook-timestamp"], BODY)
    return {**headers, "webhook-signature": f"v1,{signature}"}


def _signature() -> str:
    return signed_headers(BODY)["webhook-signature"]


# Built when each test runs (not at import): the timestamps must be fresh.
REFUSALS: dict[str, Callable[[], tuple[dict[str, str], str | bytes, int]]] = {
    "no webhook-id": lambda: (_drop("webhook-id"), BODY, 401),
    "no webhook-timestamp": lambda: (_drop("webhook-timestamp"), BODY, 401),
    "no webhook-signature": lambda: (_drop("webhook-signature"), BODY, 401),
    "empty webhook-id": lambda: (_with("webhook-id", ""), BODY, 401),
    "webhook-id with a space": lambda: (_resigned(**{"webhook-id": "msg 1"}), BODY, 401),
    "webhook-id of 257 characters": lambda: (_resigned(**{"webhook-id": "m" * 257}), BODY, 401),
    "fractional timestamp": lambda: (_resigned(**{"webhook-timestamp": f"{int(time.time())}.5"}), BODY, 401),
    "timestamp not a number": lambda: (_with("webhook-timestamp", "yesterday"), BODY, 401),
    "signature without version": lambda: (_with("webhook-signature", _signature().removeprefix("v1,")), BODY, 401),
    "signature of another version": lambda: (
        _with("webhook-signature", "v2," + _signature().removeprefix("v1,")),
        BODY,
        401,
    ),
    "signature not base64": lambda: (_with("webhook-signature", "v1,!!!not-base64!!!"), BODY, 401),
    "signature header of 5 KiB": lambda: (_with("webhook-signature", " ".join([_signature()] * 100)), BODY, 401),
    "signed with another secret": lambda: (signed_headers(BODY, OLD_SECRET), BODY, 401),
    "stale: 301 s old": lambda: (signed_headers(BODY, age_s=301), BODY, 401),
    "future: 301 s ahead": lambda: (signed_headers(BODY, age_s=-301), BODY, 401),
    "body changed by one byte": lambda: (signed_headers(BODY), BODY.replace("completed", "completes"), 401),
    "body not UTF-8": lambda: (signed_headers(BODY), BODY.encode() + b"\xff", 401),
    "signed body not JSON": lambda: (signed_headers("not json"), "not json", 400),
    "signed body a JSON array": lambda: (signed_headers("[1]"), "[1]", 400),
    "task_run.status without data": lambda: (
        signed_headers('{"type":"task_run.status"}'),
        '{"type":"task_run.status"}',
        400,
    ),
    "run_id missing": lambda: (signed_headers(task_run_body(run_id=None)), task_run_body(run_id=None), 400),  # type: ignore[arg-type]
    "run_id a path": lambda: (signed_headers(task_run_body(run_id="../x")), task_run_body(run_id="../x"), 400),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals(case: str) -> None:
    headers, body, status = REFUSALS[case]()
    assert refused(headers, body) == status


@pytest.mark.parametrize("age_s", [295, 0, -295])
def test_timestamps_within_five_minutes_either_way_are_accepted(age_s: int) -> None:
    assert VERIFIER.verify(signed_headers(BODY, age_s=age_s), BODY.encode()).data is not None


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"type": "task_run.created", "data": {"run_id": RUN}}),
        task_run_body(status="running"),
    ],
    ids=["unknown type", "status not final"],
)
def test_signed_deliveries_we_do_not_act_on_are_acknowledged_without_data(body: str) -> None:
    delivery = VERIFIER.verify(signed_headers(body), body.encode())
    assert delivery.data is None


def test_the_event_id_is_a_function_of_the_webhook_id() -> None:
    assert event_id_for("msg_1") == event_id_for("msg_1") != event_id_for("msg_2")


def test_a_verifier_needs_a_secret_and_does_not_show_it() -> None:
    from parallel_tasks.errors import MissingCredentialsError

    with pytest.raises(MissingCredentialsError, match="at least one webhook secret"):
        WebhookVerifier([])
    assert CANARY_SECRET not in repr(VERIFIER) + str(vars(VERIFIER))


_RUN_IDS = st.from_regex(r"trun_[0-9a-f]{32}", fullmatch=True)
_IDS = st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True)
_METADATA = st.dictionaries(st.text(max_size=16), st.one_of(st.text(max_size=40), st.integers(), st.booleans()))
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(run_id=_RUN_IDS, webhook_id=_IDS, status=st.sampled_from(["completed", "failed"]), metadata=_METADATA)
def test_property_every_correctly_signed_delivery_is_accepted_as_sent(
    run_id: str, webhook_id: str, status: str, metadata: dict[str, object]
) -> None:
    body = task_run_body(run_id=run_id, status=status, metadata=metadata)
    delivery = VERIFIER.verify(signed_headers(body, webhook_id=webhook_id), body.encode())
    assert delivery.webhook_id == webhook_id
    assert delivery.data is not None and (delivery.data["run_id"], delivery.data["status"]) == (run_id, status)


@_FAST
@given(metadata=_METADATA, data=st.data())
def test_property_any_one_byte_change_is_refused(metadata: dict[str, object], data: st.DataObject) -> None:
    body = task_run_body(metadata=metadata).encode()
    headers = signed_headers(body.decode())
    index = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([byte]) + body[index + 1 :]
    assert refused(headers, changed) == 401


@_FAST
@given(signature=st.text(max_size=300), timestamp=st.text(max_size=20), webhook_id=st.text(max_size=40))
def test_property_arbitrary_headers_never_verify_and_never_raise_anything_else(
    signature: str, timestamp: str, webhook_id: str
) -> None:
    headers = {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    assert refused(headers, BODY) == 401
