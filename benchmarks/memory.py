"""Section `memory`: peak traced memory with a consumer far slower than the producer."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import callstream
from benchmarks.harness import SINKS, Rows


def memory(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Peak traced memory with a consumer far slower than the producer."""
    rows = []
    for name in ("QueueSink", "DequeSink", "BoundedSink(256, block)", "BoundedSink(256, coalesce)"):
        row: dict[str, Any] = {"row": name}
        for n in sizes:

            def producer(emit: Callable[[Any], None], n: int = n) -> None:
                # bytes, not str: a str item is a token whose text `stream.text`
                # keeps (by contract); this measures what the sink itself holds.
                for i in range(n):
                    emit(b"x" * 64 + str(i).encode())

            gc.collect()
            tracemalloc.start()
            s = callstream.from_callback(producer, sink=SINKS[name]())
            with s:
                for i, _ in enumerate(s):
                    if i % 1000 == 0:
                        time.sleep(0.001)  # the slow consumer
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            row[f"peak_kb_{n}"] = peak / 1024
        row["ratio_big_vs_small"] = row[f"peak_kb_{sizes[-1]}"] / row[f"peak_kb_{sizes[0]}"]
        rows.append(row)
    return rows


def run(quick: bool) -> Rows:
    return memory((1_000, 5_000) if quick else (10_000, 100_000))
