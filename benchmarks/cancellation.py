"""Section `cancellation`: from `close()` to the producer's `finally`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import callstream
from benchmarks.harness import SINKS, Rows, pct


def cancellation(samples: int) -> list[dict[str, Any]]:
    """close() -> the producer's finally, with a producer emitting every 1 ms."""
    rows = []
    for name in ("QueueSink", "DequeSink", "BoundedSink(256, block)"):
        stop_lat, close_lat = [], []
        for _ in range(samples):
            done = threading.Event()
            box: list[float] = []

            def producer(emit: Callable[[Any], None], done: threading.Event = done, box: list[float] = box) -> None:
                try:
                    while True:
                        emit(1)
                        time.sleep(0.001)
                finally:
                    box.append(time.perf_counter())
                    done.set()

            s = callstream.from_callback(producer, sink=SINKS[name]())
            next(s)
            next(s)
            t0 = time.perf_counter()
            s.close()
            close_lat.append(time.perf_counter() - t0)
            done.wait(2)
            stop_lat.append(box[0] - t0)
        rows.append(
            {
                "row": name,
                "stop_p50_ms": pct(stop_lat, 50) * 1e3,
                "stop_p99_ms": pct(stop_lat, 99) * 1e3,
                "close_p99_ms": pct(close_lat, 99) * 1e3,
            }
        )
    return rows


def run(quick: bool) -> Rows:
    return cancellation(20 if quick else 1_000)
