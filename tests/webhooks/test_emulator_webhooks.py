"""The emulator's signed deliveries against the real receiver over HTTP: faults, retries, the admin route."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from prefect.events import Event
from pydantic import SecretStr

from parallel_tasks.emulator import Emulator, WebhookFaults, WebhookSender, generate_runs
from parallel_tasks.emulator.__main__ import build_emulator, build_parser
from parallel_tasks.emulator.server import run_emulator_server, serve_in_thread
from parallel_tasks.webhooks import DEFAULT_PATH, create_webhook_app, event_id_for
from tests.webhooks.conftest import CANARY_SECRET

RUNS = generate_runs(6, seed=3)


class Sink:
    def __init__(self, failures: int = 0) -> None:
        self.events: list[Event] = []
        self.failures = failures

    async def __call__(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("down")
        self.events.append(event)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Sink]]:
    sink = Sink()
    app = create_webhook_app([SecretStr(CANARY_SECRET)], sink=sink)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
    with serve_in_thread(server) as base_url:
        yield f"{base_url}{DEFAULT_PATH}", sink


@pytest.fixture
def make_sender() -> Iterator[type[WebhookSender]]:
    made: list[WebhookSender] = []

    class Tracked(WebhookSender):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Tracked
    for sender in made:
        sender.close()


def test_every_fault_against_the_receiver(receiver: tuple[str, Sink], make_sender: type[WebhookSender]) -> None:
    url, sink = receiver
    sender = make_sender(Emulator(RUNS).store, secret=CANARY_SECRET, url=url, backoff_s=0.01)
    run_ids = list(RUNS)
    ids = [
        sender.complete(run_ids[0]),
        sender.complete(run_ids[1], duplicate=True),
        sender.complete(run_ids[2], bad_signature=True),
        sender.complete(run_ids[3], stale_timestamp=True),
        sender.complete(run_ids[4], "failed", out_of_order=True),
        sender.complete(run_ids[5]),
    ]
    assert sender.wait_idle(30)
    outcomes = {(a.run_id, a.kind, a.status) for a in sender.log}
    assert outcomes == {
        *((run_id, "genuine", 204) for run_id in run_ids),
        (run_ids[1], "duplicate", 204),
        (run_ids[2], "forged", 401),
        (run_ids[3], "stale", 401),
    }
    assert len(sender.log) == len(outcomes)  # nothing was retried: every genuine delivery got a 2xx
    assert sorted(e.id for e in sink.events) == sorted(event_id_for(i) for i in ids)
    events = {e.resource["parallel.task-run.id"]: e.event for e in sink.events}
    assert events[run_ids[4]] == "parallel.task-run.failed" and events[run_ids[0]] == "parallel.task-run.completed"
    late = [a.run_id for a in sender.log if a.kind == "genuine"]
    assert late.index(run_ids[4]) > late.index(run_ids[5])  # held back: a later completion overtook it


def test_non_2xx_answers_are_retried_with_a_bound(receiver: tuple[str, Sink], make_sender: type[WebhookSender]) -> None:
    url, sink = receiver
    sink.failures = 2  # the receiver answers 503 twice, then accepts
    sender = make_sender(Emulator(RUNS).store, secret=CANARY_SECRET, url=url, backoff_s=0.01, max_attempts=5)
    run_id = next(iter(RUNS))
    sender.complete(run_id)
    assert sender.wait_idle(30)
    assert [(a.attempt, a.status) for a in sender.log] == [(1, 503), (2, 503), (3, 204)]
    assert len(sink.events) == 1

    nowhere = make_sender(Emulator(RUNS).store, secret=CANARY_SECRET, url=url + "-missing", backoff_s=0.01)
    nowhere.max_attempts = 3
    nowhere.complete(run_id)
    assert nowhere.wait_idle(30)
    assert [(a.attempt, a.status) for a in nowhere.log] == [(1, 404), (2, 404), (3, 404)]


def test_drawn_fault_rates_follow_the_seed(receiver: tuple[str, Sink], make_sender: type[WebhookSender]) -> None:
    url, _ = receiver
    runs = generate_runs(40, seed=5)
    faults = WebhookFaults(duplicate=0.5, bad_signature=0.25)
    kinds = []
    for _ in range(2):
        sender = make_sender(Emulator(runs).store, secret=CANARY_SECRET, url=url, faults=faults, seed=9)
        sender.complete_all()
        assert sender.wait_idle(60)
        kinds.append(sorted((a.run_id, a.kind) for a in sender.log))
    assert kinds[0] == kinds[1]
    counts = {kind: sum(1 for _, k in kinds[0] if k == kind) for kind in ("genuine", "duplicate", "forged")}
    assert counts["genuine"] == 40 and 8 <= counts["duplicate"] <= 32 and 2 <= counts["forged"] <= 20


def test_the_admin_route_completes_a_run_over_http(receiver: tuple[str, Sink]) -> None:
    url, sink = receiver
    emulator = Emulator(RUNS)
    run_id = next(iter(RUNS))
    with run_emulator_server(emulator) as base_url, httpx.Client(base_url=base_url) as client:
        off = client.post(f"/_emulator/runs/{run_id}/complete")
        assert off.status_code == 409 and "webhook secret" in off.json()["error"]
        emulator.webhooks = WebhookSender(emulator.store, secret=CANARY_SECRET, url=url)
        try:
            assert client.post("/_emulator/runs/trun_nope/complete").status_code == 404
            bad = client.post(f"/_emulator/runs/{run_id}/complete", json={"status": "cancelled"})
            assert bad.status_code == 422 and "status" in bad.json()["error"]
            assert client.post(f"/_emulator/runs/{run_id}/complete", json={"sideways": True}).status_code == 422
            done = client.post(f"/_emulator/runs/{run_id}/complete", json={"status": "failed", "duplicate": True})
            assert done.status_code == 202
            assert emulator.webhooks.wait_idle(30)
            log = client.get("/_emulator/webhooks").json()
        finally:
            emulator.webhooks.close()
    assert [(a["kind"], a["status"]) for a in log] == [("genuine", 204), ("duplicate", 204)]
    (event,) = sink.events
    assert event.id == event_id_for(done.json()["webhook_id"]) and event.event == "parallel.task-run.failed"


def test_a_run_without_a_webhook_url_cannot_complete(make_sender: type[WebhookSender]) -> None:
    runs = {
        "trun_a": {"processor": "base", "input": "x"},
        "trun_b": {
            "processor": "base",
            "input": "y",
            "webhook": {"url": "http://127.0.0.1:9/hook", "event_types": ["task_run.status"]},
        },
    }
    sender = make_sender(Emulator(runs).store, secret=CANARY_SECRET)
    assert [sender.eligible(r) for r in runs] == [False, True]
    with pytest.raises(ValueError, match="no webhook"):
        sender.complete("trun_a")


def test_the_command_line_options(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    with pytest.raises(ValueError, match="need --webhook-secret"):
        build_emulator(parser.parse_args(["--webhook-url", "http://127.0.0.1:1/h"]))
    monkeypatch.setenv("PARALLEL_WEBHOOK_SECRET", CANARY_SECRET)
    args = parser.parse_args(["--webhook-url", "http://127.0.0.1:1/h", "--webhook-duplicate-rate", "0.2"])
    emulator = build_emulator(args)
    assert emulator.webhooks is not None and emulator.webhooks.faults.duplicate == 0.2
    assert CANARY_SECRET not in repr(emulator.webhooks) + json.dumps(vars(args))
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        WebhookFaults(duplicate=2)
