"""Figures the fault-injection suite measures, printed at the end of the run and written to
``bench-results/fault-figures.json`` and ``bench-results/fault-figures.md``.

Tests call ``record(section, name, value)``; ``tests/faults/conftest.py`` prints the table in
pytest's terminal summary and writes the files.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "bench-results"
FIGURES: dict[str, dict[str, Any]] = {}
_STARTED = time.time()


def record(section: str, name: str, value: Any) -> None:
    FIGURES.setdefault(section, {})[name] = value


def add(section: str, name: str, value: int | float) -> None:
    current = FIGURES.setdefault(section, {}).get(name, 0)
    FIGURES[section][name] = current + value


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def rows() -> list[tuple[str, str, str]]:
    return [
        (section, name, _text(value))
        for section, values in FIGURES.items()
        for name, value in values.items()
    ]


def table() -> list[str]:
    data = rows()
    if not data:
        return []
    widths = [max(len(r[i]) for r in [*data, ("section", "figure", "value")]) for i in range(3)]
    widths[2] = min(widths[2], 100)
    line = "  ".join("-" * w for w in widths)
    out = [
        "  ".join(h.ljust(w) for h, w in zip(("section", "figure", "value"), widths, strict=True))
    ]
    out.append(line)
    for section, name, value in data:
        out.append(f"{section.ljust(widths[0])}  {name.ljust(widths[1])}  {value}")
    return out


def markdown(meta: dict[str, Any]) -> str:
    lines = [
        "# Fault-injection figures",
        "",
        "Written by `tests/faults` (`pytest tests/faults`, or `make faults` for the long run).",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| {k} | {_text(v)} |" for k, v in meta.items()),
        "",
        "| section | figure | value |",
        "|---|---|---|",
    ]
    for section, name, value in rows():
        lines.append(f"| {section} | {name} | {value.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def meta(status: str) -> dict[str, Any]:
    return {
        "scale": "long" if os.environ.get("FAULTS_SCALE", "").lower() == "long" else "default",
        "wall_seconds": round(time.time() - _STARTED, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "pytest_status": status,
    }


def write(status: str) -> tuple[Path, Path] | None:
    if not FIGURES:
        return None
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = meta(status)
    json_path = OUT_DIR / "fault-figures.json"
    md_path = OUT_DIR / "fault-figures.md"
    json_path.write_text(json.dumps({"meta": info, "figures": FIGURES}, indent=2, sort_keys=True))
    md_path.write_text(markdown(info))
    return json_path, md_path
