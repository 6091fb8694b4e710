"""Realistic run inputs: a seeded generator and the curated demo set shipped with the package.

``generate_runs(n, seed)`` cycles through every processor (period 18), every input_schema form
(period 7) and every output form (period 8, on ``i // 7``), so any ``n >= 56`` covers them all; one
run in ten (``i % 10 == 9``) carries the live API's newer fields. Generated runs respect the
metadata limits (keys <= 16, values <= 512 characters) and match their input_schema; the demo set
holds the ones that do not.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "INPUT_SCHEMA_FORMS",
    "OUTPUT_SCHEMA_FORMS",
    "PROCESSORS",
    "demo_runs",
    "generate_runs",
]

_BASE_PROCESSORS = ("lite", "base", "core", "core2x", "pro", "ultra", "ultra2x", "ultra4x", "ultra8x")
PROCESSORS = _BASE_PROCESSORS + tuple(f"{name}-fast" for name in _BASE_PROCESSORS)
"""Every processor name the generator uses."""

INPUT_SCHEMA_FORMS = ("json", "json-untyped", "text", "text-untyped", "string", "null", "absent")
"""input_schema forms: ``{"type": "json", ...}``, json without ``type``, text with and without
``type``, a bare string, ``null``, and no key at all."""

OUTPUT_SCHEMA_FORMS = (
    "json",
    "json-untyped",
    "text",
    "text-untyped",
    "auto",
    "string",
    "no-task-spec",
    "null-task-spec",
)
"""output_schema forms, plus a run without ``task_spec`` and one with ``"task_spec": null``."""

_YEARS = list(range(2015, 2025))

# Each topic: JSON input fields (name, JSON type, values), output fields (name, JSON type, description),
# a question template for text inputs, and a text description of the input.
_TOPICS: list[dict[str, Any]] = [
    {
        "inputs": [
            (
                "country",
                "string",
                ["France", "Japan", "Brazil", "Kenya", "Canada", "India", "Germany", "Chile"],
            ),
            ("year", "integer", _YEARS),
        ],
        "outputs": [
            ("gdp", "string", "GDP in USD for the year, formatted like '$3.1 trillion (2023)'"),
            ("gdp_growth_pct", "number", "Real GDP growth for the year, in percent"),
        ],
        "question": "What was the GDP of {country} in {year}, and how fast did it grow?",
        "about": "A country and a year to report economic indicators for",
    },
    {
        "inputs": [
            ("company_name", "string", ["Stripe", "Databricks", "Canva", "Revolut", "Figma", "Anduril"]),
            ("website", "string", ["stripe.com", "databricks.com", "canva.com", "revolut.com", "figma.com"]),
        ],
        "outputs": [
            ("founded_year", "integer", "Year the company was founded"),
            ("headquarters", "string", "City and country of the headquarters"),
            ("ceo", "string", "Name of the current chief executive"),
            ("last_funding_round", "string", "Most recent funding round, amount and date"),
        ],
        "question": "Who founded {company_name} ({website}), where is it based and who runs it today?",
        "about": "A company name and its website",
    },
    {
        "inputs": [
            (
                "drug_name",
                "string",
                ["semaglutide", "lecanemab", "tirzepatide", "pembrolizumab", "donanemab"],
            ),
            ("indication", "string", ["obesity", "early Alzheimer's disease", "type 2 diabetes", "melanoma"]),
        ],
        "outputs": [
            ("approval_status", "string", "FDA and EMA approval status for the indication"),
            ("pivotal_trial", "string", "Name of the pivotal phase 3 trial"),
            ("approved", "boolean", "Whether the FDA has approved the drug for the indication"),
        ],
        "question": "What is the regulatory status of {drug_name} for {indication}?",
        "about": "A drug and the indication it is studied for",
    },
    {
        "inputs": [
            (
                "paper_title",
                "string",
                [
                    "Attention Is All You Need",
                    "Deep Residual Learning for Image Recognition",
                    "Language Models are Few-Shot Learners",
                    "AlphaFold 2",
                ],
            ),
            ("first_author", "string", ["Vaswani", "He", "Brown", "Jumper"]),
        ],
        "outputs": [
            ("venue", "string", "Conference or journal the paper appeared in"),
            ("year", "integer", "Publication year"),
            ("citation_count", "integer", "Approximate number of citations"),
        ],
        "question": "Where was '{paper_title}' by {first_author} et al. published, and how often cited?",
        "about": "A paper title and its first author",
    },
    {
        "inputs": [
            ("city", "string", ["Lagos", "Osaka", "Medellin", "Rotterdam", "Pune", "Calgary"]),
            ("census_year", "integer", [2020, 2021, 2022, 2023]),
        ],
        "outputs": [
            ("population", "integer", "Population of the city proper"),
            ("mayor", "string", "Current mayor"),
            ("area_km2", "number", "Land area in square kilometres"),
        ],
        "question": "What was the population of {city} at the {census_year} census, and who is its mayor?",
        "about": "A city and a census year",
    },
    {
        "inputs": [
            (
                "bill",
                "string",
                ["EU AI Act", "CHIPS and Science Act", "Digital Markets Act", "Online Safety Act 2023"],
            ),
            ("jurisdiction", "string", ["European Union", "United States", "United Kingdom"]),
        ],
        "outputs": [
            ("status", "string", "Legislative status"),
            ("date_enacted", "string", "Date enacted, YYYY-MM-DD"),
            ("key_provisions", "array", "The three most important provisions"),
        ],
        "question": "Summarize the key provisions and current status of the {bill} in the {jurisdiction}.",
        "about": "A piece of legislation and its jurisdiction",
    },
    {
        "inputs": [
            ("product", "string", ["Vision Pro", "Pixel 8", "Model Y", "Steam Deck OLED", "Kindle Scribe"]),
            ("manufacturer", "string", ["Apple", "Google", "Tesla", "Valve", "Amazon"]),
        ],
        "outputs": [
            ("launch_date", "string", "Launch date, YYYY-MM-DD"),
            ("price_usd", "number", "Launch price in US dollars"),
            ("in_stock", "boolean", "Whether it is sold new today"),
        ],
        "question": "When did the {manufacturer} {product} launch, and at what price?",
        "about": "A product and its manufacturer",
    },
]

_INCLUDE = [
    "wikipedia.org",
    "sec.gov",
    "data.worldbank.org",
    "who.int",
    ".gov",
    ".edu",
    ".co.uk",
    "docs.python.org/3",
    "nih.gov/news",
    "europa.eu",
    "arxiv.org/abs",
]
_EXCLUDE = ["reddit.com", "x.com", "youtube.com/shorts", ".ai", "medium.com", "quora.com", "pinterest.com"]
_METADATA: list[tuple[str, list[Any]]] = [
    ("project", ["market-map", "due-diligence", "lit-review", "kyc-refresh", "pricing-watch"]),
    ("team", ["research", "growth", "compliance", "data-eng"]),
    ("requested_by", ["amira@example.com", "jonas@example.com", "li.wei@example.com"]),
    ("priority", [1, 2, 3, 5, 8]),
    ("batch", [17, 42, 108, 2024]),
    ("confidence", [0.5, 0.75, 0.9, 0.95]),
    ("budget_usd", [0.25, 1.5, 12.0]),
    ("reviewed", [True, False]),
    ("backfill", [True, False]),
]
_LOCATIONS = ["us", "gb", "de", "jp", "fr", "in", "br"]
_DATA_SOURCES = ["crunchbase", "pitchbook", "pubmed", "sec_edgar", "openalex"]
_MCP = [
    ("crm", "https://mcp.crm.example.com/sse", ["search_accounts", "get_account"]),
    ("docs", "https://mcp.docs.example.org/mcp", ["search", "fetch"]),
    ("warehouse", "https://mcp.dw.example.net/mcp", ["run_query"]),
]


def _json_schema(fields: list[tuple[str, str, Any]], described: bool) -> dict[str, Any]:
    """An object schema over ``fields`` (name, type, description or values), as Parallel accepts it."""
    properties: dict[str, Any] = {}
    for name, kind, extra in fields:
        prop: dict[str, Any] = {"type": kind}
        if kind == "array":
            prop["items"] = {"type": "string"}
        if described:
            prop["description"] = extra
        properties[name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [f[0] for f in fields],
        "additionalProperties": False,
    }


def _source_policy(rng: random.Random) -> dict[str, Any]:
    """Include and/or exclude domains (plain, bare extensions, domain/path prefixes), maybe a date."""
    policy: dict[str, Any] = {}
    shape = rng.random()
    if shape < 0.7:
        policy["include_domains"] = rng.sample(_INCLUDE, rng.randint(1, 4))
    if shape > 0.4:
        policy["exclude_domains"] = rng.sample(_EXCLUDE, rng.randint(1, 3))
    if rng.random() < 0.5:
        policy["after_date"] = (date(2019, 1, 1) + timedelta(days=rng.randrange(2400))).isoformat()
    return policy


def _metadata(rng: random.Random) -> dict[str, Any]:
    """One to four entries within the limits, mixing str, int, float and bool values."""
    return {key: rng.choice(values) for key, values in rng.sample(_METADATA, rng.randint(1, 4))}


def _newer_fields(rng: random.Random, index: int) -> dict[str, Any]:
    """Fields of openapi-current.json that the baseline spec lacks; MCP headers hold fake secrets."""
    fields: dict[str, Any] = {}
    if index % 20 == 9 or rng.random() < 0.5:
        servers = []
        for name, url, tools in rng.sample(_MCP, rng.randint(1, 2)):
            server: dict[str, Any] = {"type": "url", "url": url, "name": name}
            if rng.random() < 0.8:
                token = f"{rng.getrandbits(128):032x}"
                server["headers"] = (
                    {"Authorization": f"Bearer emu_sk_{token}"} if rng.random() < 0.7 else {"X-Api-Key": f"emu_{token}"}
                )
            if rng.random() < 0.6:
                server["allowed_tools"] = tools
            servers.append(server)
        fields["mcp_servers"] = servers
    if rng.random() < 0.5:
        fields["webhook"] = {
            "url": f"https://hooks.example.com/parallel/{rng.getrandbits(32):08x}",
            "event_types": ["task_run.status"],
        }
    if rng.random() < 0.5:
        settings: dict[str, Any] = {"location": rng.choice(_LOCATIONS)}
        if rng.random() < 0.5:
            settings["data_sources"] = {
                "free": rng.sample(_DATA_SOURCES[3:], 1),
                "pay_per_use": rng.sample(_DATA_SOURCES[:3], 1),
            }
        fields["advanced_settings"] = settings
    if rng.random() < 0.4:
        fields["memory_scope_key"] = rng.choice(["team-research", "acct_4821", "due-diligence_q3", "personal"])
    if rng.random() < 0.4:
        fields["previous_interaction_id"] = f"trun_{rng.getrandbits(128):032x}"
    if rng.random() < 0.5:
        fields["enable_events"] = rng.random() < 0.7
    return fields


def _run(rng: random.Random, index: int) -> dict[str, Any]:
    """One run input; see the module docstring for how forms are chosen."""
    topic = rng.choice(_TOPICS)
    values = {name: rng.choice(choices) for name, _kind, choices in topic["inputs"]}
    input_form = INPUT_SCHEMA_FORMS[index % len(INPUT_SCHEMA_FORMS)]
    output_form = OUTPUT_SCHEMA_FORMS[(index // len(INPUT_SCHEMA_FORMS)) % len(OUTPUT_SCHEMA_FORMS)]
    has_spec = output_form not in ("no-task-spec", "null-task-spec")
    if has_spec and input_form.startswith("json"):
        json_input = True
    elif has_spec and input_form in ("text", "text-untyped", "string"):
        json_input = False
    else:
        json_input = rng.random() < 0.5

    body: dict[str, Any] = {"processor": PROCESSORS[index % len(PROCESSORS)]}
    body["input"] = values if json_input else topic["question"].format(**values)
    if rng.random() < 0.7:
        body["metadata"] = _metadata(rng)
    if rng.random() < 0.5:
        body["source_policy"] = _source_policy(rng)
    if output_form == "null-task-spec":
        body["task_spec"] = None
    elif has_spec:
        body["task_spec"] = _task_spec(rng, topic, input_form, output_form)
    if index % 10 == 9:
        body.update(_newer_fields(rng, index))
    return body


def _task_spec(rng: random.Random, topic: dict[str, Any], input_form: str, output_form: str) -> dict[str, Any]:
    """A task_spec with the given input and output forms."""
    answer = "A concise, sourced answer of at most three sentences"
    outputs: dict[str, Any] = {
        "json": {"json_schema": _json_schema(topic["outputs"], described=True), "type": "json"},
        "json-untyped": {"json_schema": _json_schema(topic["outputs"], described=True)},
        "text": {"description": answer, "type": "text"},
        "text-untyped": {"description": answer},
        "auto": {"type": "auto"},
        "string": rng.choice([answer, "A short report with citations", "One paragraph, plain English"]),
    }
    spec: dict[str, Any] = {"output_schema": outputs[output_form]}
    inputs: dict[str, Any] = {
        "json": {"json_schema": _json_schema(topic["inputs"], described=False), "type": "json"},
        "json-untyped": {"json_schema": _json_schema(topic["inputs"], described=False)},
        "text": {"description": topic["about"], "type": "text"},
        "text-untyped": {"description": topic["about"]},
        "string": topic["about"],
        "null": None,
    }
    if input_form != "absent":
        spec["input_schema"] = inputs[input_form]
    return spec


def generate_runs(n: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``n`` realistic run inputs keyed by run id (``trun_`` + 32 hex), the same for the same seed.

    Args:
        n: How many runs.
        seed: Fixes ids and contents.

    Returns:
        Run id to TaskRunInput body, in generation order.

    Example:
        >>> runs = generate_runs(3, seed=1)
        >>> len(runs), all(run_id.startswith("trun_") and len(run_id) == 37 for run_id in runs)
        (3, True)
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    runs: dict[str, dict[str, Any]] = {}
    while len(runs) < n:
        run_id = f"trun_{rng.getrandbits(128):032x}"
        if run_id not in runs:
            runs[run_id] = _run(rng, len(runs))
    return runs


@cache
def _demo_records() -> tuple[tuple[str, str], ...]:
    """(run_id, body as JSON text) of the shipped demo set, read once."""
    text = resources.files(__package__).joinpath("data/demo_runs.json").read_text(encoding="utf-8")
    return tuple((record["run_id"], json.dumps(record["run_input"])) for record in json.loads(text))


def demo_runs() -> dict[str, dict[str, Any]]:
    """The curated demo set (a fresh copy each call), keyed by run id.

    The ids are random hex, as real ones are, so nothing in them tells the runs apart: the file
    ``data/demo_runs.json`` notes what each run is for (seven good runs, two that break the metadata
    limits, two that do not match their input_schema, one that carries MCP server credentials).
    """
    return {run_id: json.loads(body) for run_id, body in _demo_records()}
