"""The printed tables of ``make bench`` (also pasted into docs/performance.md)."""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _table(headers: list[str], rows: list[list[str]], text_columns: tuple[int, ...] = (0,)) -> str:
    """Columns padded to their widest cell: text columns left-aligned, figures right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def cells(values: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    line = cells(headers)
    out = [line, "-" * max(len(line), *(len(cells(r)) for r in rows)) if rows else "-" * len(line)]
    out.extend(cells(row) for row in rows)
    return "\n".join(out)


ORDER = ("a", "b", "c", "c0", "d", "e")

# What each row's durability covers: what is recorded, where, and which crash it survives.
DURABILITY = {
    "a": "every step committed in Firestore, across services; survives a crash of any service "
    "at any line",
    "b": "none: the run lives in memory, in one process",
    "c": "a checkpoint per super-step in Postgres; resumed from the last one by a process that "
    "reloads the thread",
    "c0": "none: checkpoints in memory, in one process",
    "d": "none: the run lives in memory, in one process (no session)",
    "e": "each step's output recorded in Postgres; the workflow recovered on restart of the same "
    "app",
}


def durability(row: dict[str, Any]) -> str:
    text = DURABILITY[row["key"]]
    if row["key"] == "c" and "Sqlite" in row["label"]:
        text = text.replace("Postgres", "SQLite")
    return text


def step_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The step-overhead rows, (a) first."""
    rows = results.get("step_overhead", [])
    return sorted(rows, key=lambda r: ORDER.index(r["key"]) if r["key"] in ORDER else 99)


def step_overhead(results: dict[str, Any]) -> str:
    rows = step_rows(results)
    base = next((r for r in rows if r["key"] == "a" and r.get("ms_per_step")), None)
    a = base["ms_per_step"]["median"] if base else None
    body = []
    for r in rows:
        stats = r.get("ms_per_step")
        if not stats:
            body.append([r["label"], "-", "-", "-", "-", "-", "-"])
            continue
        median = stats["median"]
        ratio = median / a if a else None
        times = f"{a / median:,.0f}x" if a and median else "-"
        body.append(
            [
                r["label"],
                _fmt(median),
                _fmt(stats["p95"]),
                _fmt(stats["min"]),
                str(stats["n"]),
                _fmt(ratio),
                times,
            ]
        )
    headers = ["system", "median ms/step", "p95", "min", "runs", "this / (a)", "(a) / this"]
    text = [
        f"== 1. Step overhead: one agent, {results.get('steps_per_run', 10)} steps "
        "(9 calculator calls, then the answer), zero-latency scripted model",
        _table(headers, body),
    ]
    covered = [r for r in rows if r["key"] in DURABILITY]
    if covered:
        text.append("  what each row's durability covers:")
        width = max(len(r["label"].strip()) for r in covered)
        for r in covered:
            text.append(f"    {r['label'].strip().ljust(width)}  {durability(r)}")
    for r in rows:
        if r.get("unavailable"):
            text.append(f"  {r['label'].strip()}: could not run: {r['unavailable']}")
        if r.get("note"):
            text.append(f"  {r['label'].strip()}: {r['note']}")
    if base and base.get("firestore_lock_timeouts") is not None:
        text.append(
            f"  (a): the Firestore emulator aborted {base['firestore_lock_timeouts']} "
            f"transactions on a 'Transaction lock timeout' during these runs"
        )
    floor = results.get("floor")
    if floor and a:
        txn = floor["firestore_transaction_ms"]["median"]
        push = floor["pubsub_push_round_trip_ms"]["median"]
        f = floor["floor_ms"]
        text.append(
            f"  floor: one Firestore transaction (read + write one doc) {txn:.1f} ms + one Pub/Sub"
            f" push round trip {push:.1f} ms = {f:.1f} ms (medians)"
        )
        text.append(
            f"  (a) / floor = {a / f:.1f}; a step with a tool call makes two hops "
            f"(executor -> tool_invoker -> executor): (a) / (2 x floor) = {a / (2 * f):.1f}"
        )
    return "\n".join(text)


COST_LINES = (
    ("firestore.read", "Firestore document reads", "firestore.read"),
    ("firestore.write", "Firestore document writes", "firestore.write"),
    (
        "firestore.write.live",
        "Firestore live event writes (status, chunks)",
        "firestore.write.live",
    ),
    ("firestore.delete", "Firestore deletes (TTL of audit records)", "firestore.delete"),
    ("pubsub.publish", "Pub/Sub messages published", "pubsub"),
    ("pubsub.delivery", "Pub/Sub deliveries (push + audit pull)", None),
    ("gcs.write", "Cloud Storage writes (Class A)", "gcs.write"),
    ("gcs.read", "Cloud Storage reads (Class B)", "gcs.read"),
    ("tasks.create", "Cloud Tasks created", "tasks.create"),
)


def cost(results: dict[str, Any]) -> str:
    data = results.get("cost")
    if not data:
        return "== 2. Cost per step: not measured: " + results.get("errors", {}).get("cost", "")
    usd = data["usd_per_million_steps"]
    rows = []
    for key, label, price_key in COST_LINES:
        dollars = usd.get(price_key) if price_key else None
        rows.append(
            [
                label,
                _fmt(data["per_step"].get(key, 0)),
                "-" if dollars is None else f"{dollars:.2f}",
            ]
        )
    rows.append(["total", "", f"{data['total_usd_per_million_steps']:.2f}"])
    text = [
        f"== 2. Cost per step: {data['runs']} runs x {data['steps_per_run']} steps, all services in"
        " one process on the emulators, operations counted by the adapters",
        _table(["operation", "per step", "USD / million steps"], rows),
        f"  Pub/Sub: {data['pubsub_billable_bytes_per_step']:,.0f} billable bytes per step (each "
        "publish and each delivery billed at least 1000 bytes), $40/TiB",
        f"  Firestore at $0.06/$0.18/$0.02 per 100k reads/writes/deletes (issue 7; nam5 rates); at "
        f"us-central1 regional rates ($0.03/$0.09/$0.01) Firestore is "
        f"${data['firestore_usd_per_million_steps_at_regional_rates']:.2f} per million steps",
        f"  prices of {data['prices_date']}; the model call, Cloud Run compute, egress and storage "
        "at rest are not included",
    ]
    by_service = data.get("per_step_by_service") or {}
    if by_service:
        ops = ("firestore.read", "firestore.write", "pubsub.publish", "gcs.write")
        rows = [
            [service, *(_fmt(counts.get(op, 0.0)) for op in ops)]
            for service, counts in by_service.items()
        ]
        text.append("  per step, by the service that made the operation:")
        table = _table(["  service", "FS reads", "FS writes", "publishes", "GCS writes"], rows)
        text.append("\n".join("  " + line for line in table.splitlines()))
    longer = data.get("longer_run")
    if longer:
        ps = longer["per_step"]
        text.append(
            f"  one {longer['steps_per_run']}-step run: {_fmt(ps['firestore.read'])} reads and "
            f"{_fmt(ps['firestore.write'])} writes per step, "
            f"${longer['total_usd_per_million_steps']:.2f} per million steps (the snapshotter "
            "reads the last 20 messages, so its reads grow until the transcript reaches 20)"
        )
    return "\n".join(text)


def durable_writes(results: dict[str, Any]) -> str:
    """cloudagents' cloud writes per step beside the peers' database writes, and what they buy."""
    rows = {r["key"]: r for r in step_rows(results)}
    cost_data = results.get("cost") or {}
    body: list[list[str]] = []
    if cost_data:
        ps = cost_data["per_step"]
        body.append(
            [
                "(a) cloudagents (Firestore)",
                _fmt(ps["firestore.write"]),
                "-",
                "documents",
                f"{cost_data['total_usd_per_million_steps']:.2f}",
                DURABILITY["a"],
            ]
        )
    else:
        body.append(["(a) cloudagents (Firestore)", "-", "-", "-", "-", DURABILITY["a"]])
    notes = []
    for key in ("c", "d", "e"):
        r = rows.get(key)
        if r is None:
            continue
        if key == "d":
            body.append([r["label"].strip(), "-", "-", "-", "-", durability(r)])
            continue
        label = r["label"].strip()
        writes = r.get("db_writes")
        if writes:
            body.append(
                [
                    label,
                    _fmt(writes["rows_written_per_step"]),
                    _fmt(writes["write_transactions_per_step"]),
                    "rows",
                    "-",
                    durability(r),
                ]
            )
        else:
            why = r.get("db_writes_unavailable") or r.get("unavailable") or r.get("note") or "-"
            body.append([label, "-", "-", "-", "-", durability(r)])
            notes.append(f"  {label}: writes not counted: {why}")
        if key == "c" and r.get("checkpoints_per_run") is not None:
            notes.append(f"  {label}: {r['checkpoints_per_run']} checkpoints per run")
        if key == "e" and r.get("dbos_steps_per_run") is not None:
            notes.append(
                f"  {label}: {r['dbos_steps_per_run']} DBOS steps recorded per run "
                "(a model step per turn, a tool step per call)"
            )
    headers = ["system", "writes/step", "write txns", "unit", "USD / M steps", "durability covers"]
    text = [
        "== 2b. Durable writes per step, beside the peers (same 10-step agent)",
        _table(headers, body, text_columns=(0, 3, 5)),
        "  (a): Firestore documents written, counted by the adapters (section 2); its USD is the "
        "whole cloud bill of section 2",
        "  (c), (e): rows inserted, updated or deleted, and writing transactions (each a commit "
        "and a WAL flush), counted by PostgreSQL (pg_stat_statements and transaction ids) in the "
        "peer's own database over its timed runs",
        "  Postgres is billed per instance, not per operation, so those rows have no per-step "
        "price; (d) writes nothing",
        *notes,
    ]
    return "\n".join(text)


def throughput(results: dict[str, Any]) -> str:
    rows = results.get("throughput") or []
    if not rows:
        errors = {k: v for k, v in results.get("errors", {}).items() if "throughput" in k}
        return f"== 3. Throughput: not measured: {errors}"
    body = []
    for r in rows:
        lat = r["run_latency_s"]
        body.append(
            [
                r["label"],
                f"{r['satisfied']}/{r['runs']}",
                str(r["lost"]),
                str(r["dead_letters"]),
                f"{r['steps_per_second']:.1f}",
                f"{lat['median']:.1f}",
                f"{lat['p95']:.1f}",
                f"{r['wall_seconds']:.1f}",
                str(r["firestore_lock_timeouts"]),
            ]
        )
    headers = [
        "run_executor",
        "SATISFIED",
        "lost",
        "dead letters",
        "steps/s",
        "p50 run s",
        "p95 run s",
        "wall s",
        "lock timeouts",
    ]
    first = rows[0]
    text = [
        f"== 3. Throughput: {first['runs']} concurrent runs x {first['steps_per_run']} steps on"
        " the local stack (every service a separate process)",
        _table(headers, body),
    ]
    for r in rows:
        cpu = r.get("cpu_seconds") or {}
        if cpu:
            spent = sorted(cpu.items(), key=lambda kv: -kv[1])
            total = sum(cpu.values())
            share = ", ".join(f"{k} {v:.0f}" for k, v in spent if v >= 0.5)
            text.append(
                f"  CPU seconds, {r['label']}: {share} (total {total:.0f} in "
                f"{r['wall_seconds']:.0f} s of wall time on {results['machine']['nproc']} cores)"
            )
    return "\n".join(text)


def cold_start(results: dict[str, Any]) -> str:
    cold = results.get("cold_start")
    rss = results.get("peak_rss") or {}
    if not cold:
        return "== 4. Cold start: not measured: " + results.get("errors", {}).get("cold start", "")
    google = cold["google_libs_import_ms"]
    body = []
    for name, s in cold["services"].items():
        mem = rss.get(name) or {}
        worker = mem.get("peak_mib")
        body.append(
            [
                name,
                f"{s['app_ms']:.0f}",
                f"{s['app_and_deps_ms']:.0f}",
                f"{s['app_over_google_libs']:.2f}",
                f"{s['app_and_deps_over_google_libs']:.2f}",
                "-" if worker is None else f"{worker:.0f}",
                "-" if not mem else f"{mem['total_mib']:.0f} ({mem['processes']} proc)",
            ]
        )
    headers = [
        "service",
        "app ms",
        "app+clients ms",
        "app / libs",
        "app+clients / libs",
        "peak RSS MiB",
        "all processes MiB",
    ]
    return "\n".join(
        [
            f"== 4. Cold start (fresh process, median of {cold['repeats']}) and peak RSS (VmHWM "
            "after the throughput test)",
            _table(headers, body),
            f"  libs = importing google.cloud firestore, pubsub_v1, storage, tasks_v2 alone: "
            f"{google:.0f} ms",
            "  app+clients builds the adapters a service's usual request touches (coldstart.USES;"
            " the others are built on first use)",
        ]
    )


def graph_supersteps(results: dict[str, Any]) -> str:
    rows = results.get("graph_supersteps") or []
    if not rows:
        return "== 5. Graph supersteps: not measured"
    nodes = next((r["nodes"] for r in rows if "nodes" in r), 10)
    body = []
    for row in rows:
        if "unavailable" in row:
            body.append([row["label"], "-", "-", "-", "-", f"unavailable: {row['unavailable']}"])
            continue
        t = row["ms_per_superstep"]
        writes = row.get("db_writes") or {}
        body.append(
            [
                row["label"],
                _fmt(t["median"]),
                _fmt(t["p95"]),
                _fmt(writes.get("rows_written_per_superstep"), 2)
                if "rows_written_per_superstep" in writes
                else row.get("writes_per_superstep", "-"),
                str(row.get("checkpoints_per_run", "-")),
                row.get("durability", ""),
            ]
        )
    headers = [
        "engine",
        "ms/superstep median",
        "p95",
        "writes/superstep",
        "checkpoints/run",
        "durability",
    ]
    text = [
        f"== 5. Graph supersteps: the same {nodes}-node chain (n0 -> ... -> n{nodes - 1}, one "
        "superstep per node, reducers extend + add)",
        _table(headers, body, text_columns=(0, 5)),
    ]
    floor = results.get("floor")
    if floor:
        text.append(
            f"  distributed floor per superstep: one Firestore transaction + one Pub/Sub push "
            f"= {floor['floor_ms']:.1f} ms (section 1's floor)"
        )
    return "\n".join(text)


def render(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    head = (
        f"cloudagents make bench, {results.get('date')}: {m.get('cpu_model')}, {m.get('nproc')} "
        f"cores, {m.get('memory_gib', 0):.1f} GiB, Python {m.get('python')}"
    )
    start, end = m.get("load_average_at_start"), m.get("load_average_at_end")
    if start and end:
        head += f"\n(1-minute load average {start[0]:.1f} at the start, {end[0]:.1f} at the end)"
    parts = [
        head,
        step_overhead(results),
        cost(results),
        durable_writes(results),
        throughput(results),
        cold_start(results),
        graph_supersteps(results),
    ]
    errors = results.get("errors") or {}
    if errors:
        parts.append("== errors\n" + "\n".join(f"  {k}: {v}" for k, v in errors.items()))
    if "wall_seconds" in results:
        parts.append(f"bench wall time: {results['wall_seconds']:.0f} s")
    return "\n\n".join(parts)
