"""The harness every section shares: timing, percentiles, the sinks compared, the report.

A section is a function `run(quick) -> rows`: a list of dicts, each with a
`"row"` name; `main(sections, argv)` runs the chosen ones, prints each as a
table and writes `latest.md` / `latest.json`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import callstream

Rows = list[dict[str, Any]]
#: a section of `make bench`: `run(quick)` returns its rows
Section = Callable[[bool], Rows]

RESULTS = Path(__file__).parent / "results"

SINKS: dict[str, Callable[[], Any]] = {
    "QueueSink": callstream.QueueSink,
    "DequeSink": callstream.DequeSink,
    "BoundedSink(256, block)": lambda: callstream.BoundedSink(256, "block"),
    "BoundedSink(256, drop_oldest)": lambda: callstream.BoundedSink(256, "drop_oldest"),
    "BoundedSink(256, drop_newest)": lambda: callstream.BoundedSink(256, "drop_newest"),
    "BoundedSink(256, coalesce)": lambda: callstream.BoundedSink(256, "coalesce"),
    "BoundedSink(100k, error)": lambda: callstream.BoundedSink(10**6, "error"),
}


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_times(fns: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """The median time of each function, the repeats taken round-robin.

    Interleaved, a burst of load from outside (a shared machine) falls on
    every row instead of one, so the ratios of one run stay comparable.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def pct(values: list[float], q: int) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {platform.system()}"}
    out["cpus"] = str(os.cpu_count())
    for dist in ("callstream", "langchain-core", "langchain", "langgraph", "langchain-classic", "openai"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def versions_line(v: dict[str, str]) -> str:
    """The versions as a sentence for the docs page (latest.json keeps them as data)."""
    machine = f"{v.get('machine', '?')}, {v.get('cpus', '?')} CPUs, Python {v.get('python', '?')}"
    dists = ", ".join(f"{name} {version}" for name, version in v.items() if name not in ("python", "machine", "cpus"))
    return f"Measured on {machine}; {dists}."


def table(title: str, rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    keys = [c for c in cols if c != "row"]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "row"]
    lines = [f"### {title}", "", "| " + " | ".join(["", *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        cells = [str(c).replace("|", "\\|") for c in [r["row"], *(_fmt(r.get(k, "")) for k in keys)]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def main(sections: Mapping[str, Section], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    parser.add_argument("--only", nargs="*", help="sections to run")
    parser.add_argument("--out", default=str(RESULTS), help="where to write latest.md / latest.json")
    args = parser.parse_args(argv)
    chosen = args.only or list(sections)
    unknown = [name for name in chosen if name not in sections]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(sections)}")
    out = Path(args.out)
    results: dict[str, Any] = {}
    if args.only and (out / "latest.json").exists():  # refresh some sections, keep the others
        results = json.loads((out / "latest.json").read_text())
    results.update({"date": time.strftime("%Y-%m-%d"), "versions": versions()})
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        results[name] = sections[name](args.quick)
        print(table(name, results[name]), flush=True)
    md = [f"## callstream benchmarks — {results['date']}", "", versions_line(results["versions"]), ""]
    md += [table(name, results[name]) for name in sections if name in results]
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "latest.md").write_text("\n".join(md))
    return 0
