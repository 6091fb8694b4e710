"""Fault injection at the core: each kind, determinism under a seed, scripts, per-run overrides, counters."""

from __future__ import annotations

import email.utils
import random
import time
from collections import Counter
from typing import Any

import pytest

from parallel_tasks.emulator import Emulator, EmulatorResponse, FaultConfig
from tests.emulator.conftest import API_KEY, CheckedEmulator, run_path
from tests.emulator.spec import plan_problems

RUN = "trun_bbf5d6d60a5a8aca6d19f35c5426fab0"
KEY = {"x-api-key": API_KEY}


def get(emulator: Emulator, run_id: str = RUN) -> EmulatorResponse:
    return emulator.handle("GET", run_path(run_id), KEY)


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rates": {503: 0.7, 500: 0.5}},
        {"rates": {503: -0.1}},
        {"rates": {"explode": 0.1}},
        {"rates": {99: 0.1}},
        {"script": [503, "nope"]},
        {"script": [True]},
        {"status": 700},
        {"latency_ms": -1},
        {"slow_chunks": 0},
        {"retry_after": "minutes"},
    ],
)
def test_invalid_configs_are_refused_up_front(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        FaultConfig(**kwargs)


def test_statuses_may_be_given_as_digit_strings() -> None:
    config = FaultConfig(script=["503", "ok"], rates={"500": 0.5})
    assert config.script == (503, "ok")
    assert config.rates == {500: 0.5}


# -- each kind of fault ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 401, 404, 422, 409])
def test_status_faults_answer_in_the_error_envelope(emulator: CheckedEmulator, status: int) -> None:
    emulator.set_faults(FaultConfig(script=[status]), run_id=RUN)
    plan = get(emulator)
    assert (plan.status, plan.fault) == (status, str(status))
    assert plan_problems(plan) == []
    assert get(emulator).status == 200  # the script is used up


def test_429_says_when_to_retry_in_each_style(emulator: CheckedEmulator) -> None:
    def retry_headers(style: str, seconds: float) -> dict[str, str]:
        emulator.set_faults(FaultConfig(status=429, retry_after=style, retry_after_s=seconds), run_id=RUN)  # type: ignore[arg-type]
        headers = dict(get(emulator).headers)
        return {k: v for k, v in headers.items() if k.startswith("retry-after")}

    assert retry_headers("seconds", 2) == {"retry-after": "2"}
    assert retry_headers("seconds", 0.5) == {"retry-after": "0.5"}
    assert retry_headers("ms", 1.25) == {"retry-after-ms": "1250"}
    assert retry_headers("none", 3) == {}
    when = email.utils.parsedate_to_datetime(retry_headers("http-date", 30)["retry-after"]).timestamp()
    assert time.time() + 25 <= when <= time.time() + 31


def test_reset_sends_half_the_body_then_drops(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["reset"]), run_id=RUN)
    plan = get(emulator)
    full = emulator.store.get(RUN)
    assert plan.status == 200 and plan.fault == "reset"
    assert dict(plan.headers)["content-length"] == str(len(full or b""))
    assert plan.reset_after == len(full or b"") // 2
    assert b"".join(plan.parts()) == (full or b"")[: plan.reset_after]


def test_truncate_sends_a_complete_response_with_half_a_json_body(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["truncate"]), run_id=RUN)
    plan = get(emulator)
    full = emulator.store.get(RUN) or b""
    assert plan.body == full[: len(full) // 2]
    assert dict(plan.headers)["content-length"] == str(len(plan.body))
    assert plan.reset_after is None


@pytest.mark.parametrize("status", [200, 502])
def test_html_fault_answers_an_html_page(emulator: CheckedEmulator, status: int) -> None:
    emulator.set_faults(FaultConfig(script=["html"], html_status=status), run_id=RUN)
    plan = get(emulator)
    assert plan.status == status
    assert dict(plan.headers)["content-type"].startswith("text/html")
    assert plan.body.lstrip().startswith(b"<!DOCTYPE html>")


def test_slow_fault_splits_the_body_with_pauses(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=["slow"], slow_chunks=5, slow_chunk_delay_ms=40), run_id=RUN)
    plan = get(emulator)
    assert plan.fault == "slow" and plan.chunk_delay_s == pytest.approx(0.04)
    assert len(plan.parts()) == 5
    assert b"".join(plan.parts()) == emulator.store.get(RUN)


def test_faults_apply_to_unknown_runs_too(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=[503, "truncate"]), run_id="missing")
    assert get(emulator, "missing").status == 503
    plan = get(emulator, "missing")
    assert plan.status == 404 and plan.fault == "truncate"
    assert get(emulator, "missing").status == 404


def test_latency_and_jitter(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(latency_ms=50))
    assert get(emulator).delay_s == pytest.approx(0.05)
    assert emulator.handle("GET", "/nowhere", {}).delay_s == pytest.approx(0.05)  # every response waits
    emulator.set_faults(FaultConfig(latency_ms=10, jitter_ms=20))
    delays = [get(emulator).delay_s for _ in range(200)]
    assert all(0.010 <= d < 0.030 for d in delays)
    assert len(set(delays)) > 150  # drawn per request
    assert max(delays) - min(delays) > 0.015


# -- scripts, permanent statuses, precedence ---------------------------------------------------------


def test_a_script_is_consumed_one_entry_per_request(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=[503, 503, "ok", 429, 200]), run_id=RUN)
    assert [get(emulator).status for _ in range(7)] == [503, 503, 200, 429, 200, 200, 200]
    assert [r.fault for r in emulator.log] == ["503", "503", None, "429", None, None, None]
    assert [r.attempt for r in emulator.log] == list(range(7))


def test_setting_faults_restarts_the_script_and_other_runs_keep_theirs(emulator: CheckedEmulator) -> None:
    other = "trun_298c00492d5fc38ee78951c3257ff3a0"
    get(emulator)
    get(emulator)
    emulator.set_faults(FaultConfig(script=[503]), run_id=RUN)
    emulator.set_faults(FaultConfig(script=[500]), run_id=other)
    assert get(emulator).status == 503  # starts at entry 0 despite two earlier requests
    assert get(emulator, other).status == 500
    emulator.set_faults(None, run_id=RUN)
    assert get(emulator).status == 200


def test_a_global_script_applies_to_each_run_separately(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=[503, 502]))
    others = ["trun_298c00492d5fc38ee78951c3257ff3a0", "trun_97f403dc1d430d70f55d51f1dfc81ab5"]
    assert [get(emulator, r).status for r in [RUN, *others]] == [503, 503, 503]
    assert [get(emulator, r).status for r in [RUN, *others]] == [502, 502, 502]
    assert [get(emulator, r).status for r in [RUN, *others]] == [200, 200, 200]


@pytest.mark.parametrize("status", [401, 404, 422, 503])
def test_a_permanent_status_wins_over_script_and_rates(emulator: CheckedEmulator, status: int) -> None:
    emulator.set_faults(FaultConfig(status=status, script=[200], rates={500: 1.0}), run_id=RUN)
    assert {get(emulator).status for _ in range(5)} == {status}
    assert get(emulator, "trun_298c00492d5fc38ee78951c3257ff3a0").status == 200


def test_per_run_faults_replace_the_global_ones(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(rates={503: 1.0}, latency_ms=5))
    emulator.set_faults(FaultConfig(), run_id=RUN)
    plan = get(emulator)
    assert (plan.status, plan.delay_s) == (200, 0.0)
    assert get(emulator, "trun_298c00492d5fc38ee78951c3257ff3a0").status == 503


def test_rates_hit_about_their_frequency(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(rates={503: 0.2, 429: 0.1, "truncate": 0.1}))
    faults = Counter(get(emulator).fault for _ in range(2000))
    assert 340 <= faults["503"] <= 460
    assert 140 <= faults["429"] <= 260
    assert 140 <= faults["truncate"] <= 260
    assert faults[None] + faults["503"] + faults["429"] + faults["truncate"] == 2000


# -- determinism ---------------------------------------------------------------------------------------


def faulty(seed: int) -> Emulator:
    config = FaultConfig(
        rates={
            408: 0.05,
            429: 0.05,
            500: 0.05,
            502: 0.05,
            503: 0.05,
            "reset": 0.05,
            "truncate": 0.05,
            "html": 0.05,
        },
        jitter_ms=30,
    )
    runs = {f"r{i}": {"processor": "base", "input": str(i)} for i in range(20)}
    return Emulator(runs, api_keys=[API_KEY], faults=config, seed=seed)


def outcomes(emulator: Emulator, order: list[str]) -> dict[str, list[tuple[int, str | None, float]]]:
    seen: dict[str, list[tuple[int, str | None, float]]] = {}
    for run_id in order:
        plan = get(emulator, run_id)
        seen.setdefault(run_id, []).append((plan.status, plan.fault, plan.delay_s))
    return seen


def test_same_seed_same_faults_whatever_the_interleaving() -> None:
    order = [f"r{i % 20}" for i in range(400)]
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)  # same requests per run id, another arrival order
    first = outcomes(faulty(seed=42), order)
    assert first == outcomes(faulty(seed=42), shuffled)
    assert len({fault for runs in first.values() for _status, fault, _delay in runs}) >= 8
    assert first != outcomes(faulty(seed=43), order)


def test_reset_replays_the_same_faults() -> None:
    emulator = faulty(seed=7)
    order = [f"r{i % 20}" for i in range(100)]
    first = outcomes(emulator, order)
    emulator.reset()
    assert outcomes(emulator, order) == first


def test_counters_count_faults_by_status_and_run(emulator: CheckedEmulator) -> None:
    emulator.set_faults(FaultConfig(script=[503, 429, "reset", 200]), run_id=RUN)
    for _ in range(4):
        get(emulator)
    get(emulator, "missing")
    assert emulator.requests_by_status == {503: 1, 429: 1, 200: 2, 404: 1}
    assert emulator.requests_by_run == {RUN: 4, "missing": 1}
    assert [r.fault for r in emulator.log] == ["503", "429", "reset", None, None]
