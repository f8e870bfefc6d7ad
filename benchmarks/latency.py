"""Section `latency`: producer-to-consumer hand-off latency, one item every 0.5 ms."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import callstream
from benchmarks.harness import SINKS, Rows, pct


def handoff_latency(samples: int) -> list[dict[str, Any]]:
    """One item every 0.5 ms; the producer stamps, the consumer measures."""

    def paced(emit: Callable[[Any], None]) -> None:
        for _ in range(samples):
            emit(time.perf_counter())
            time.sleep(0.0005)

    def plain() -> list[float]:
        q: queue.Queue[Any] = queue.Queue()

        def produce() -> None:
            paced(q.put)
            q.put(None)

        t = threading.Thread(target=produce)
        t.start()
        lat = []
        while (x := q.get()) is not None:
            lat.append(time.perf_counter() - x)
        t.join()
        return lat

    rows = []
    base = plain()
    rows.append(
        {"row": "queue.Queue", "p50_us": pct(base, 50) * 1e6, "p99_us": pct(base, 99) * 1e6, "p99_vs_queue": 1.0}
    )
    for name in ("QueueSink", "DequeSink", "BoundedSink(256, block)"):
        lat = [time.perf_counter() - x for x in callstream.from_callback(paced, sink=SINKS[name]())]
        rows.append(
            {
                "row": name,
                "p50_us": pct(lat, 50) * 1e6,
                "p99_us": pct(lat, 99) * 1e6,
                "p99_vs_queue": pct(lat, 99) / pct(base, 99),
            }
        )
    return rows


def run(quick: bool) -> Rows:
    return handoff_latency(200 if quick else 4_000)
