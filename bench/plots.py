"""The ratio benchmark's plot (matplotlib, PNG): ack latency over each run, and throughput
against the number of visits in flight, raw Temporal beside the product on each database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after the backend is chosen

COLOURS = {"raw": "tab:green", "raw-regular": "tab:olive", "sqlite": "tab:blue", "postgresql": "tab:red"}
# the product at a baseline revision (product@REV, `--against`): by database, then by revision
BASELINE_COLOURS = {
    "sqlite": ["tab:cyan", "tab:purple", "tab:gray"],
    "postgresql": ["tab:orange", "tab:pink", "tab:brown"],
}


def label(run: dict[str, Any]) -> str:
    return run["side"] if run["side"].startswith("raw") else f"{run['side']}, {run['db']}"


def colour(run: dict[str, Any], baselines: list[str] | None = None) -> str:
    if run["side"].startswith("raw"):
        return COLOURS[run["side"]]
    if run["side"].startswith("product@"):
        palette = BASELINE_COLOURS[run["db"]]
        index = baselines.index(run["side"]) if baselines and run["side"] in baselines else 0
        return palette[index % len(palette)]
    return COLOURS[run["db"]]


def rolling_median(points: list[tuple[float, float]], width: int) -> tuple[list[float], list[float]]:
    """The median latency of each `width` consecutive acks (by time sent), at their middle."""
    points = sorted(points)
    xs, ys = [], []
    for i in range(0, max(0, len(points) - width + 1), max(1, width // 4)):
        window = points[i : i + width]
        xs.append(window[width // 2][0])
        ys.append(sorted(latency for _, latency in window)[width // 2])
    return xs, ys


def plot(runs: list[dict[str, Any]], title: str, out: Path) -> None:
    baselines = list(dict.fromkeys(r["side"] for r in runs if r["side"].startswith("product@")))
    fig, (over_time, scaling) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    for run in runs:
        acks = [(t, ms) for t, ms in run["acks"]]
        style = "-" if run["in_flight"] <= 8 else "--"
        over_time.scatter([t for t, _ in acks], [ms for _, ms in acks], s=2, alpha=0.12, color=colour(run, baselines))
        xs, ys = rolling_median(acks, 48)
        over_time.plot(xs, ys, style, color=colour(run, baselines), label=f"{label(run)}, {run['in_flight']} in flight")
    over_time.set_yscale("log")
    over_time.set_xlabel("seconds into the run")
    over_time.set_ylabel("ack latency, ms (log; lines: rolling median of 48)")
    over_time.set_title("Ack latency over the run")
    over_time.legend(fontsize=8)
    over_time.grid(True, which="both", alpha=0.3)
    series: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        series.setdefault(label(run), []).append(run)
    for name, points in series.items():
        points.sort(key=lambda r: r["in_flight"])
        scaling.plot(
            [r["in_flight"] for r in points],
            [r["visits_per_s"] for r in points],
            "o-",
            color=colour(points[0], baselines),
            label=name,
        )
    scaling.set_xscale("log", base=2)
    scaling.set_xticks(sorted({r["in_flight"] for r in runs}), [str(n) for n in sorted({r["in_flight"] for r in runs})])
    scaling.set_xlabel("visits in flight")
    scaling.set_ylabel("visits/s (each: registration, 11 events, paid)")
    scaling.set_ylim(bottom=0)
    scaling.set_title("Throughput against concurrency")
    scaling.legend(fontsize=8)
    scaling.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
