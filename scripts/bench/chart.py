"""Draw ``bench-results/chart.png`` from ``results.json`` (runs in ``.venv-bench``: matplotlib).

``python -m scripts.bench.chart RESULTS_JSON CHART_PNG``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _steps(ax: Any, results: dict[str, Any]) -> None:
    order = ("a", "b", "c", "c0", "d", "e")
    rows = [r for r in results.get("step_overhead", []) if r.get("ms_per_step")]
    rows.sort(key=lambda r: order.index(r["key"]) if r["key"] in order else 99)
    labels = [r["label"] for r in rows]
    medians = [r["ms_per_step"]["median"] for r in rows]
    p95 = [r["ms_per_step"]["p95"] for r in rows]
    y = range(len(rows))
    labels = [label.strip() for label in labels]
    ax.barh(y, p95, color="#c9d6ea", label="p95")
    ax.barh(y, medians, color="#3b6fb6", label="median")
    for i, (m, p) in enumerate(zip(medians, p95, strict=True)):
        ax.text(p * 1.1, i, f"{m:.3g} ms", va="center", fontsize=8)
    floor = (results.get("floor") or {}).get("floor_ms")
    if floor:
        ax.axvline(floor, color="#d0543c", linestyle="--", label=f"floor {floor:.1f} ms")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(p95, default=1) * 8)
    ax.set_xlabel("ms per step (log scale)")
    ax.set_title("Step overhead, 10-step agent, zero-latency model")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)


def _cost(ax: Any, results: dict[str, Any]) -> None:
    cost = results.get("cost") or {}
    usd = cost.get("usd_per_million_steps") or {}
    items = [(k, v) for k, v in usd.items() if v > 0]
    if not items:
        ax.text(0.5, 0.5, "no cost figures", ha="center")
        return
    names = [k for k, _ in items]
    values = [v for _, v in items]
    ax.bar(names, values, color="#5a9e6f")
    for i, v in enumerate(values):
        ax.text(i, v, f"${v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("USD per million steps")
    total = cost.get("total_usd_per_million_steps", sum(values))
    ax.set_title(f"Cloud cost per million steps: ${total:.2f} (model excluded)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def _throughput(ax: Any, results: dict[str, Any]) -> None:
    rows = results.get("throughput", [])
    if not rows:
        ax.text(0.5, 0.5, "no throughput figures", ha="center")
        return
    labels = [f"{r['label']}\n{r['satisfied']}/{r['runs']} SATISFIED" for r in rows]
    rates = [r["steps_per_second"] for r in rows]
    ax.bar(labels, rates, color="#8c6bb1")
    for i, r in enumerate(rows):
        lat = r["run_latency_s"]
        ax.text(
            i,
            rates[i],
            f"{rates[i]:.1f} steps/s\np50 {lat['median']:.1f}s p95 {lat['p95']:.1f}s",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(top=max(rates) * 1.35)
    ax.set_ylabel("steps per second")
    ax.set_title(
        f"Throughput: {rows[0]['runs']} concurrent runs x {rows[0]['steps_per_run']} steps"
    )
    ax.tick_params(axis="x", labelsize=8)


def _coldstart(ax: Any, results: dict[str, Any]) -> None:
    cold = results.get("cold_start") or {}
    services = cold.get("services") or {}
    if not services:
        ax.text(0.5, 0.5, "no cold-start figures", ha="center")
        return
    names = list(services)
    app = [services[n]["app_ms"] for n in names]
    deps = [services[n]["app_and_deps_ms"] for n in names]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], app, width=0.4, label="import + build app", color="#e0a13a")
    ax.bar([i + 0.2 for i in x], deps, width=0.4, label="+ build clients", color="#b5651d")
    google = cold.get("google_libs_import_ms")
    if google:
        ax.axhline(google, color="#444", linestyle="--", label=f"Google libs alone {google:.0f} ms")
    ax.set_xticks(list(x), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("ms (fresh process)")
    ax.set_title("Cold start per service")
    ax.legend(fontsize=7)


def draw(results: dict[str, Any], out: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    _steps(axes[0][0], results)
    _cost(axes[0][1], results)
    _throughput(axes[1][0], results)
    _coldstart(axes[1][1], results)
    machine = results.get("machine", {})
    fig.suptitle(
        f"cloudagents make bench, {results.get('date', '')}: {machine.get('cpu_model', '')}, "
        f"{machine.get('nproc', '?')} cores, {machine.get('memory_gib', 0):.0f} GiB",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    draw(results, Path(sys.argv[2]))


if __name__ == "__main__":
    main()
