"""Relay figures: `python -m benchmarks.relay` (`--quick` for tiny sizes).

1. Throughput through a relay: a run's events read by one subscriber, and by
   ten at once, against iterating the same stream directly (target >= 0.8x),
   for a raw `from_callback` producer (the relay's own cost laid bare) and for
   `iter_callbacks` on a scripted chat model (LangChain's callbacks included).
2. Resume cost: time to the first replayed event of a finished run of 10,000
   events, from the start, the middle and the end.

Medians over repeats; every figure is a ratio against the direct read in the
same run. Writes `benchmarks/results/relay.md` and `relay.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import callstream
from callstream import Event
from callstream.testing import ScriptedChatModel

RESULTS = Path(__file__).parent / "results"


def raw(n: int) -> Callable[[], callstream.Stream[Any]]:
    def producer(emit: Callable[[Any], None]) -> None:
        for _ in range(n):
            emit(Event("token", run_id="r", text="x"))

    return lambda: callstream.from_callback(producer)


def model(n: int) -> Callable[[], callstream.Stream[Any]]:
    chat = ScriptedChatModel(responses=["x" * n], chunk_size=1)
    return lambda: callstream.iter_callbacks(chat, "go")


def direct(make: Callable[[], callstream.Stream[Any]]) -> float:
    t0 = time.perf_counter()
    for _ in make():
        pass
    return time.perf_counter() - t0


def through_relay(make: Callable[[], callstream.Stream[Any]], subscribers: int) -> float:
    relay = callstream.MemoryRelay(maxlen=10**6)
    t0 = time.perf_counter()
    key = relay.publish(make())

    def read() -> None:
        for _ in relay.subscribe(key):
            pass

    readers = [threading.Thread(target=read) for _ in range(subscribers - 1)]
    for reader in readers:
        reader.start()
    read()
    for reader in readers:
        reader.join()
    return time.perf_counter() - t0


def median(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def throughput(n: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, make in (("from_callback (raw events)", raw(n)), ("iter_callbacks (scripted chat model)", model(n))):
        base = median(partial(direct, make), repeats)
        rows.append({"row": f"{name}: direct", "events_per_s": round(n / base), "ratio": 1.0})
        for subs in (1, 10):
            t = median(partial(through_relay, make, subs), repeats)
            rows.append(
                {
                    "row": f"{name}: publish + {subs} subscriber(s)",
                    "events_per_s": round(n / t),
                    "ratio": round(base / t, 3),
                }
            )
    return rows


def resume(n: int, repeats: int) -> list[dict[str, Any]]:
    relay = callstream.MemoryRelay(maxlen=n)
    key = relay.publish(raw(n)())
    while relay.status(key) == "running":
        time.sleep(0.01)
    rows = []
    for where, after in (("start", None), ("middle", str(n // 2)), ("end", str(n - 1))):

        def first_event(after: str | None = after) -> float:
            t0 = time.perf_counter()
            with relay.subscribe(key, after=after) as sub:
                next(iter(sub))
                return time.perf_counter() - t0

        rows.append(
            {
                "row": f"resume at the {where} of {n} events",
                "first_event_ms": round(median(first_event, repeats) * 1e3, 3),
            }
        )
    return rows


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"# Relay figures (Python {sys.version.split()[0]})", ""]
    for section, rows in results.items():
        lines += [f"### {section}", ""]
        keys = list(rows[0])
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n, repeats = (500, 1) if args.quick else (10_000, 5)
    results = {"throughput": throughput(n, repeats), "resume": resume(n, repeats)}
    text = report(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relay.md").write_text(text)
    (args.out / "relay.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
