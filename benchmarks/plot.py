"""Render the measured figures in benchmarks/results.csv as the PNG plots of docs/benchmarks.md.

results.csv holds what the benchmark scripts printed, one figure per line (date, benchmark,
run, metric, value, note); nothing here measures anything. Add the lines of a new run, then:

  python benchmarks/plot.py            # writes docs/img/bench-*.png

Needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import csv
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here; must be chosen before pyplot is imported
import matplotlib.pyplot as plt
from matplotlib import ticker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.csv"
OUT = ROOT / "docs" / "img"


@dataclass(frozen=True)
class BarChart:
    """One horizontal bar per run of a benchmark, for one metric (the latest date of each run)."""

    benchmark: str
    metric: str
    title: str
    axis: str
    log: bool = False
    target: float | None = None
    target_label: str = ""


BAR_CHARTS = [
    BarChart(
        "engine",
        "us_cpu_per_event",
        "Engine alone: CPU per event (lower is better)",
        "µs CPU per event",
        target=1.0,
        target_label="target 1 µs (1 M events/s)",
    ),
    BarChart(
        "worker",
        "events_per_s",
        "End to end, 1 M payments (higher is better)",
        "events/s",
        log=True,
        target=300_000,
        target_label="target 300k events/s",
    ),
    BarChart("online", "p50_ms", "Online reads: p50 per call (lower is better)", "ms"),
    BarChart(
        "training",
        "seconds",
        "Point-in-time training set, wall seconds (lower is better)",
        "s",
        log=True,
        target=60,
        target_label="target 60 s (10M events / 1M labels)",
    ),
]


def load(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if not row["date"].startswith("#")]


def latest(rows: list[dict[str, str]], benchmark: str, metric: str) -> dict[str, float]:
    """run -> value of the newest date for that run (rows are kept in file order within a date)."""
    best: dict[str, tuple[str, float]] = {}
    for row in rows:
        if row["benchmark"] == benchmark and row["metric"] == metric:
            run, date = row["run"], row["date"]
            if run not in best or date >= best[run][0]:
                best[run] = (date, float(row["value"]))
    return {run: value for run, (_, value) in best.items()}


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def bar_chart(rows: list[dict[str, str]], chart: BarChart) -> Path | None:
    values = latest(rows, chart.benchmark, chart.metric)
    if not values:
        return None
    runs = list(values)
    # Run names are sentences: wrapped, so tight_layout can fit them beside the bars (unwrapped,
    # the longest pushed the others' starts off the figure).
    labels = ["\n".join(textwrap.wrap(run, 50)) for run in runs]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(10, 0.28 * lines + 0.2 * len(runs) + 1.4))
    bars = ax.barh(
        labels,
        [values[r] for r in runs],
        color=["#d9822b" if r.startswith(("streamfs", "2 streamfs")) else "#7a8fa6" for r in runs],
    )
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[_number(values[r]) for r in runs], padding=3, fontsize=8)
    ax.margins(x=0.15)
    if chart.log:
        ax.set_xscale("log")
    if chart.target is not None:
        ax.axvline(chart.target, color="#b03a2e", linestyle="--", linewidth=1, label=chart.target_label)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(chart.axis)
    ax.set_title(chart.title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path = OUT / f"bench-{chart.benchmark}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def freshness_chart(rows: list[dict[str, str]]) -> Path | None:
    """p50/p99 freshness against the steady produce rate, newest date only (its last rows)."""
    fresh = [row for row in rows if row["benchmark"] == "freshness"]
    if not fresh:
        return None
    newest = max(row["date"] for row in fresh)
    latest_of: dict[tuple[str, float], float] = {}  # (metric, rate) -> its last value that day
    for row in fresh:
        if row["date"] == newest:
            latest_of[(row["metric"], float(row["run"]))] = float(row["value"])
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (metric, rate), value in latest_of.items():
        series[metric].append((rate, value))
    fig, ax = plt.subplots(figsize=(7, 4))
    for metric, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=metric.replace("_ms", ""))
    ax.axhline(100, color="#b03a2e", linestyle="--", linewidth=1, label="target p99 100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _number(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks(sorted({p[0] for points in series.values() for p in points}))
    ax.set_xlabel("steady produce rate, events/s")
    ax.set_ylabel("Kafka append → readable through the client, ms")
    ax.set_title(f"Freshness, payments pipeline, one worker ({newest})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = OUT / "bench-freshness.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    rows = load(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS)
    OUT.mkdir(parents=True, exist_ok=True)
    for path in [bar_chart(rows, chart) for chart in BAR_CHARTS] + [freshness_chart(rows)]:
        if path is not None:
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
