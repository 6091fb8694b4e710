"""The benchmark's reports: a markdown table with the machine and the targets, and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from openlineage_overhead import markdown as openlineage_markdown

CLIENT_ORDER = ("aiohttp", "httpx", "sdk-sequential", "sdk-async", "ours", "ours-httpx", "flow", "events")
LABELS = {
    "aiohttp": "(a) aiohttp ClientSession, gather",
    "httpx": "(b) httpx AsyncClient, default transport",
    "sdk-sequential": "(b) SDK `Parallel`, sequential loop",
    "sdk-async": "(b) SDK `AsyncParallel`, gather",
    "ours": "(c) our batch API, default transport",
    "ours-httpx": "(c) our batch API, `httpx.AsyncHTTPTransport()`",
    "flow": "(d) audit flow on a Prefect server",
    "events": "(d) the audit's events alone, same server: the ceiling of (d)",
}
SHORT = {
    "httpx": "httpx",
    "sdk-sequential": "SDK sequential",
    "sdk-async": "SDK async gather",
    "ours": "ours (default)",
    "ours-httpx": "ours (httpx transport)",
    "flow": "audit flow",
    "events": "its events alone",
}
SERVERS = ("emulator", "plain")  # the project's emulator; a plain Starlette/uvicorn server (plain_server.py)
PACKAGES = ("prefect-parallel-tasks", "prefect", "httpx", "httpx-aiohttp", "aiohttp", "parallel-web", "uvloop")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, Python, OS, date, load and package versions of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x[:9] == "MemTotal:")
        ram = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        ram = "unknown"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": ram,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": versions,
    }


def key(row: dict[str, Any]) -> tuple[float, int, int]:
    """A row's configuration: (latency, N, concurrency)."""
    return float(row["latency_ms"]), int(row["n"]), int(row["concurrency"])


def server_of(row: dict[str, Any]) -> str:
    """The server a row was measured on (rows written before there were two are the emulator's)."""
    return str(row.get("server", "emulator"))


def find(
    rows: list[dict[str, Any]], client: str, config: tuple[float, int, int], server: str = "emulator"
) -> dict[str, Any] | None:
    """The row of a client at a configuration on a server, measured (no error, not skipped), or None."""
    for row in rows:
        if row["client"] == client and key(row) == config and server_of(row) == server and "rps" in row:
            return row
    return None


def ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as ``0.95x``, or ``—``."""
    if value is None or not reference:
        return "—"
    return f"{value / reference:.2f}x"


def number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators, or ``—``."""
    return "—" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]], only: set[tuple[float, int, int]] | None = None) -> list[str]:
    """The markdown results table, one line per (latency, N, concurrency, server, client); ``only`` some configurations.

    Each x (a) column divides by (a) at the same configuration on the same server.
    """
    lines = [
        "| latency | N | c | server | client | runs timed | runs/s | x (a) | p50 ms | x (a) | p95 ms | x (a) "
        "| peak RSS MB | x (a) | CPU µs/run | load | notes |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    configs = sorted({key(row) for row in rows if only is None or key(row) in only})
    for config, server, client in [(cfg, srv, cl) for cfg in configs for srv in SERVERS for cl in CLIENT_ORDER]:
        reference = find(rows, "aiohttp", config, server) or {}
        row = next((r for r in rows if r["client"] == client and key(r) == config and server_of(r) == server), None)
        if row is None:
            continue
        head = f"| {config[0]:.0f} ms | {config[1]:,} | {config[2]} | {server} | {LABELS[client]} "
        if "skipped" in row:  # listed under the table instead
            continue
        if "rps" not in row:
            reason = f"error: {row.get('error', '?')}".replace("|", "/")
            lines.append(head + "| " + " | ".join(["—"] * 11) + f" | {reason} |")
            continue
        notes = []
        if row.get("repeats", 1) > 1:
            notes.append(f"median of {row['repeats']} batches")
        if row["runs"] < config[1]:
            notes.append(f"sample: first {row['runs']:,} of {config[1]:,} ids; the rate is over the sample")
        if client == "sdk-sequential":
            notes.append("one at a time: c does not apply")
        if client == "flow":
            notes.append(f"wall clock incl. flow start and end; p50/p95 of {row.get('fetches', 0):,} fetches")
        if row.get("errors"):
            notes.append(f"**{row['errors']} errors**")
        cells = [
            number(row["runs"]),
            number(row["rps"]),
            ratio(row["rps"], reference.get("rps")),
            number(row.get("p50_ms"), 1),
            ratio(row.get("p50_ms"), reference.get("p50_ms")),
            number(row.get("p95_ms"), 1),
            ratio(row.get("p95_ms"), reference.get("p95_ms")),
            number(row["peak_rss_mb"]),
            ratio(row["peak_rss_mb"], reference.get("peak_rss_mb")),
            number(row.get("cpu_us_per_run")),
            number(row.get("load_1m"), 1),
        ]
        lines.append(head + "| " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    return lines


@dataclass
class Target:
    """One benchmark target: what is compared, the bound, the measured ratio."""

    name: str
    measured: float | None
    bound: float
    at_most: bool = False

    @property
    def verdict(self) -> str:
        """PASS, MISS, or NOT MEASURED."""
        if self.measured is None:
            return "NOT MEASURED"
        ok = self.measured <= self.bound if self.at_most else self.measured >= self.bound
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        """``- PASS name: measured (bound)``."""
        sign = "≤" if self.at_most else "≥"
        unit = " MB" if self.at_most else "x"
        shown = "—" if self.measured is None else f"{self.measured:.2f}{unit}"
        return f"- **{self.verdict}** {self.name}: {shown} (target {sign} {self.bound:g}{unit})"


def targets(rows: list[dict[str, Any]]) -> list[Target]:
    """The benchmark targets, checked against this run."""

    def rps_ratio(client: str, other: str, config: tuple[float, int, int], server: str = "emulator") -> float | None:
        mine, theirs = find(rows, client, config, server), find(rows, other, config, server)
        return mine["rps"] / theirs["rps"] if mine and theirs else None

    slow, fast, flow = (50.0, 1_000, 64), (0.0, 1_000, 64), (50.0, 10_000, 64)
    flow_row = find(rows, "flow", flow)
    return [
        Target("(c) vs (a) at 50 ms, c64, N=1,000", rps_ratio("ours", "aiohttp", slow), 0.9),
        Target("(c) vs (a) at 50 ms, c64, N=1,000, plain server", rps_ratio("ours", "aiohttp", slow, "plain"), 0.9),
        Target("(c) vs SDK async gather at 50 ms, c64, N=1,000", rps_ratio("ours", "sdk-async", slow), 1.5),
        Target("(c) vs SDK sequential loop at 50 ms, c64, N=1,000", rps_ratio("ours", "sdk-sequential", slow), 40),
        Target("(c) vs (a) at 0 ms, c64, N=1,000", rps_ratio("ours", "aiohttp", fast), 0.7),
        Target("(c) vs (a) at 0 ms, c64, N=1,000, plain server", rps_ratio("ours", "aiohttp", fast, "plain"), 0.7),
        Target("(d) vs (a) at 50 ms, c64, N=10,000", rps_ratio("flow", "aiohttp", flow), 0.5),
        Target("(d) peak RSS at 50 ms, c64, N=10,000", flow_row["peak_rss_mb"] if flow_row else None, 300, True),
    ]


def zero_ms_range(rows: list[dict[str, Any]], server: str = "emulator") -> str:
    """(c)/(a) over every 0 ms configuration on a server, for the record."""
    ratios = []
    for config in sorted({key(r) for r in rows if key(r)[0] == 0.0}):
        mine, ceiling = find(rows, "ours", config, server), find(rows, "aiohttp", config, server)
        if mine and ceiling:
            ratios.append(f"N={config[1]:,}/c{config[2]}: {mine['rps'] / ceiling['rps']:.2f}x")
    return ", ".join(ratios) or "—"


def ceiling_line(rows: list[dict[str, Any]]) -> str:
    """(d) against its own ceiling: the Prefect server storing the audit's events with nothing else running."""
    ceiling = next((r for r in rows if r["client"] == "events" and "rps" in r), None)
    flow = find(rows, "flow", key(ceiling)) if ceiling else None
    aiohttp = find(rows, "aiohttp", key(ceiling)) if ceiling else None
    if not (ceiling and flow and aiohttp):
        return "The ceiling of (d), its events alone on the same server, was not measured in this run."
    return (
        f"The ceiling of (d) at N={key(ceiling)[1]:,}: the same Prefect server stored the audit's events alone, "
        f"through the audit's own batcher, at {ceiling['rps']:,.0f}/s ({ceiling['rps'] / aiohttp['rps']:.2f}x (a)); "
        f"the audit ran at {flow['rps'] / ceiling['rps']:.2f}x of that. The audit ends when the server has stored "
        "every run's event, so it cannot be faster than its server stores them."
        + server_cpu_sentence(ceiling, flow, aiohttp)
    )


def server_cpu_sentence(ceiling: dict[str, Any], flow: dict[str, Any], aiohttp: dict[str, Any]) -> str:
    """What the Prefect server's CPU time says of that ceiling: it stores events in one process, so one core's
    worth of its CPU per event bounds the rate whatever the client does."""
    per_event, per_run = ceiling.get("server_cpu_us_per_run"), flow.get("server_cpu_us_per_run")
    if not (per_event and per_run):
        return ""
    bound = 1e6 / per_event
    return (
        f" The server spent {per_event:,.0f} µs of CPU per event storing them, counted over the whole measurement"
        f" with its background services ({per_run:,.0f} µs per run during the audit): one process, so even with a"
        f" whole core to itself it stores about {bound:,.0f} events/s at most ({bound / aiohttp['rps']:.2f}x (a))."
    )


def skipped_line(rows: list[dict[str, Any]]) -> str:
    """Which measurements the time budget skipped, in one line."""
    skipped = [f"{key(r)[0]:.0f} ms N={key(r)[1]:,} c{key(r)[2]}" for r in rows if "skipped" in r]
    if not skipped:
        return "Nothing was skipped."
    return f"Skipped by the time budget (`--budget-min`), (d) at: {', '.join(skipped)}."


def startup_lines(startup: dict[str, Any]) -> list[str]:
    """The ephemeral server's start-up cost, in a few lines."""
    if not startup:
        return ["Not measured."]
    if "error" in startup:
        return [f"Error: {startup['error']}"]
    return [
        f"- `import prefect` alone: {startup['import_s']:.1f} s (median).",
        f"- a one-line flow, first time (fresh `PREFECT_HOME`: database created and migrated): "
        f"{startup['first_s']:.1f} s, so **{startup['first_cost_s']:.1f} s** over the import.",
        f"- the same flow again (database exists): {startup['warm_s']:.1f} s, so "
        f"**{startup['warm_cost_s']:.1f} s** over the import.",
        "",
        "This is paid once per process that runs flows without `PREFECT_API_URL`; the rows of (d) above run "
        "against an already-running server and do not include it.",
    ]


def verify_lines(result: dict[str, Any] | None) -> list[str]:
    """The targets of ``verify`` over 100,000 records (``verify.py``): records per second and peak RSS."""
    if not result:
        return ["- **NOT MEASURED** verify over 100,000 records"]
    if "error" in result:
        return [f"- **NOT MEASURED** verify over 100,000 records: {result['error']}"]
    rate = "PASS" if result["records_per_s"] >= 5_000 else "MISS"
    memory = "PASS" if result["peak_rss_mb"] <= 300 else "MISS"
    return [
        f"- **{rate}** verify, {result['records']:,} records ({result['runs']:,} runs): {result['records_per_s']:,} "
        f"records/s (target ≥ 5,000/s; {result['records_per_cpu_s']:,} per CPU second, load {result['load_1m']:.1f})",
        f"- **{memory}** verify peak RSS: {result['peak_rss_mb']:.0f} MB (target ≤ 300 MB)",
    ]


def run_kind(data: dict[str, Any]) -> str:
    """Which run this was: the whole bench, or only what the targets are about."""
    if data.get("targets_only"):
        return "`make bench BENCH_ARGS=--targets-only` run (the targeted configurations only)"
    return "`make bench` run"


def markdown(data: dict[str, Any]) -> str:
    """The whole ``latest.md``."""
    machine = data["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    total = data.get("total_s")
    lines = [
        "# Benchmarks: the latest run",
        "",
        f"The latest {run_kind(data)} (`benchmarks/run.py`). Run ids are fetched from the emulator over real HTTP "
        "on 127.0.0.1, "
        "served by its own process (httptools + uvloop), with 0 ms and 50 ms added latency per request. "
        "(a) and (c) at c64 are also measured on a second server that is not the project's "
        "(`plain_server.py`: one Starlette route on `uvicorn.run` with its defaults, pre-serialized bodies), "
        "so their ratio does not depend on the emulator being light; the `server` column says which.",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM; {machine['os']}; "
        f"{machine['python']}",
        f"- **Date**: {machine['date']}; load average at start {machine['load_at_start']} (a shared, noisy machine)",
        f"- **Code**: {data.get('code', 'unknown')}; {versions}",
        f"- **Total bench time**: {total / 60:.1f} min" if total else "- **Total bench time**: —",
        "",
        "## Targets",
        "",
        *(target.line() for target in targets(data["rows"])),
        *verify_lines(data.get("verify")),
        "",
        f"For the record, (c)/(a) at every 0 ms configuration: {zero_ms_range(data['rows'])} on the emulator; "
        f"{zero_ms_range(data['rows'], 'plain')} on the plain server.",
        "",
        ceiling_line(data["rows"]),
        "",
        "## Results",
        "",
        "Every client runs in its own process: peak RSS is that process's (`ru_maxrss`, the flow's children "
        "included), CPU µs/run is its CPU time over the timed batch divided by the runs. Each x (a) column is the "
        "figure divided by (a)'s at the same latency, N, concurrency and server in this run (for latency and RSS, "
        "lower is better). Load is the machine's 1-minute load average when the measurement ended (with 2 cores, "
        "above 2 means other work competed for the CPU).",
        "",
        *table(data["rows"]),
        "",
        skipped_line(data["rows"]),
        "",
        *([openlineage_markdown(data["openlineage"]), ""] if data.get("openlineage") else []),
        "How each is measured:",
        "",
        "- Every client makes one warm-up request first; the clock then runs over the whole batch, connection "
        "set-up included. Batches of N ≤ 1,000 are timed 3 times on the same client and the rate is over the median "
        "batch (the machine is shared and noisy); N = 10,000 once. Latency is per request, measured around each "
        "call (inside the concurrency limit); for our client it is "
        "`FetchResult.elapsed_ms`. No retries anywhere (`max_retries=0`) and a 30 s timeout.",
        "- (a) reads and JSON-decodes each body; (b) httpx `AsyncClient()` with its defaults (transport, limits) "
        "and `.json()`; the SDKs parse into their `RunInput`; (c) and (d) parse into `TaskRunInput`.",
        "- The SDK's sequential loop does not depend on c: it is measured in each row, on a fixed sample "
        "(the first 200 ids at 50 ms, the first 2,000 at 0 ms) when N is larger, and its rate is over the sample.",
        "- (d) times `audit_run_inputs(run_ids=..., credentials_block=..., max_concurrency=c)` on a Prefect server "
        "started beforehand (temporary `PREFECT_HOME`), each run fetched, validated and recorded to fresh local "
        "storage, per-run artifacts off; the worker then checks every run's `latest.json`. The rate is N over "
        "the flow call's wall clock (flow run creation, task runs, asset materializations, summary artifact and "
        "exit included; the audit ends once the server has stored every run's event). Its p50/p95 are of the "
        "fetches inside (the worker wraps `AsyncParallelClient.fetch`).",
        "- (d)'s ceiling (`events_worker.py`), on the same server right after it: one event of the audit's shape "
        "per run id, through the audit's `EventBatcher`, timed until the server has stored them all; nothing "
        "fetched, validated or recorded.",
        "",
        "## Ephemeral server start-up",
        "",
        *startup_lines(data.get("startup", {})),
        "",
        "## Where the time goes",
        "",
        "`uv run python benchmarks/profile_hot_path.py client|flow [--latency-ms 50] [--n 1000] [--concurrency 64]` "
        "profiles (c) or (d) with pyinstrument: self time per package, the top functions, the call tree.",
        "",
        "![rps relative to aiohttp](latest.png)",
        "",
    ]
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> None:
    """Bars of each client's runs/s relative to (a) on the emulator, one panel per latency, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    latencies = sorted({key(r)[0] for r in rows})
    clients = [c for c in CLIENT_ORDER if c != "aiohttp"]
    figure, axes = plt.subplots(1, len(latencies), figsize=(7 * len(latencies), 5), sharey=True, squeeze=False)
    width = 0.8 / len(clients)
    for axis, latency in zip(axes[0], latencies, strict=True):
        configs = sorted({key(r) for r in rows if key(r)[0] == latency})
        for index, client in enumerate(clients):
            heights = []
            for config in configs:
                mine, ceiling = find(rows, client, config), find(rows, "aiohttp", config)
                heights.append(mine["rps"] / ceiling["rps"] if mine and ceiling else 0.0)
            positions = [x + (index - (len(clients) - 1) / 2) * width for x in range(len(configs))]
            axis.bar(positions, heights, width, label=SHORT[client])
        axis.axhline(1.0, color="black", linewidth=1, label="(a) aiohttp = 1")
        axis.axhline(0.9, color="grey", linestyle="--", linewidth=0.8, label="targets 0.9x / 0.7x / 0.5x")
        for bound in (0.7, 0.5):
            axis.axhline(bound, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xticks(range(len(configs)), [f"N={n:,}\nc{c}" for _, n, c in configs])
        axis.set_yscale("log")
        axis.set_title(f"{latency:.0f} ms added latency")
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("runs/s relative to (a) aiohttp (log)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    machine = data["machine"]
    figure.suptitle(f"Run inputs per second vs aiohttp: {machine['cpu']}, {machine['cores']} cores, {machine['date']}")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
# The configurations the targets are about, shown in the README (latest.md has all of them).
README_CONFIGS = {(50.0, 1000, 64), (50.0, 10000, 64), (0.0, 1000, 64)}


def readme_section(data: dict[str, Any]) -> str:
    """The README's benchmark section: the machine, the targets, the targeted rows, the chart."""
    machine = data["machine"]
    return "\n".join(
        [
            README_START,
            f"Latest {run_kind(data)}, {machine['date']}: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} "
            f"RAM, {machine['python']}; code {data.get('code', 'unknown')}; load average at start "
            f"{machine['load_at_start']} (a shared machine: every figure is compared with (a) measured in the same "
            "run).",
            "",
            *(target.line() for target in targets(data["rows"])),
            *verify_lines(data.get("verify")),
            "",
            ceiling_line(data["rows"]),
            "",
            *table(data["rows"], only=README_CONFIGS),
            "",
            "![runs per second relative to aiohttp](benchmarks/results/latest.png)",
            "",
            "Every configuration (0 and 50 ms; N = 100, 1,000 and 10,000; concurrency 16 and 64), how each figure is "
            "measured, and the ephemeral server's start-up: "
            "[`benchmarks/results/latest.md`](benchmarks/results/latest.md).",
            README_END,
        ]
    )


def update_readme(data: dict[str, Any], readme: Path) -> None:
    """Replace the README's benchmark section (between its markers) with this run's."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme}: no {README_START} ... {README_END} section; not updated")
        return
    readme.write_text(text[:start] + readme_section(data) + text[end + len(README_END) :])


def write_reports(data: dict[str, Any], directory: Path) -> None:
    """Write ``latest.json``, ``latest.md`` and ``latest.png``, and the README's section; print the targets."""
    (directory / "latest.json").write_text(json.dumps(data, indent=1) + "\n")
    (directory / "latest.md").write_text(markdown(data))
    update_readme(data, directory.parent.parent / "README.md")
    try:
        chart(data, directory / "latest.png")
    except Exception as exc:  # a missing matplotlib must not lose the table
        print(f"chart not written: {exc}")
    print("Targets:")
    for target in targets(data["rows"]):
        print(target.line().replace("**", ""))
