"""``setup`` compares a deployment's triggers with the server's copy: a set the server returns in another order
(``expect``, ``after``, ``for_each``, here or in a nested trigger) is the same trigger, not a change."""

from __future__ import annotations

from typing import Any

from parallel_tasks import server_setup

TRIGGER: dict[str, Any] = {
    "type": "event",
    "enabled": True,
    "match": {"prefect.resource.id": "parallel.task-run.*"},
    "expect": ["parallel.task-run.completed", "parallel.task-run.failed"],
    "after": ["parallel.task-run.created", "parallel.task-run.queued"],
    "for_each": ["prefect.resource.id", "parallel.task-run.processor"],
    "posture": "Reactive",
    "threshold": 1,
    "within": 0,
    "parameters": {"run_id": "{{ event.resource['parallel.task-run.id'] }}"},
}


def reordered(trigger: dict[str, Any]) -> dict[str, Any]:
    return {**trigger, **{field: trigger[field][::-1] for field in ("expect", "after", "for_each")}}


def test_a_trigger_is_the_same_whatever_the_order_of_its_sets() -> None:
    assert server_setup._wanted_triggers("f/d", [TRIGGER]) == server_setup._wanted_triggers("f/d", [reordered(TRIGGER)])


def test_nested_triggers_are_compared_the_same_way() -> None:
    inner = {k: v for k, v in TRIGGER.items() if k not in ("parameters", "enabled")}
    compound = {"type": "compound", "require": "all", "within": 60, "triggers": [inner]}
    swapped = {**compound, "triggers": [reordered(inner)]}
    assert server_setup._wanted_triggers("f/d", [compound]) == server_setup._wanted_triggers("f/d", [swapped])


def test_a_different_event_is_still_a_change() -> None:
    other = {**TRIGGER, "expect": ["parallel.task-run.completed"]}
    assert server_setup._wanted_triggers("f/d", [TRIGGER]) != server_setup._wanted_triggers("f/d", [other])
