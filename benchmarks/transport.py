"""Section `transport`: the hand-off floor — items/s through each sink against `queue.Queue`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import callstream
from benchmarks.harness import SINKS, Rows, median_time


def transport(n: int, repeats: int) -> list[dict[str, Any]]:
    items = [f"t{i % 10}" for i in range(n)]

    def plain_call() -> None:
        out: list[str] = []
        f = out.append
        for x in items:
            f(x)

    def generator() -> None:
        def gen() -> Iterator[str]:
            yield from items

        for _ in gen():
            pass

    def queue_handoff() -> None:
        q: queue.Queue[Any] = queue.Queue()
        end = object()

        def produce() -> None:
            for x in items:
                q.put(x)
            q.put(end)

        t = threading.Thread(target=produce)
        t.start()
        while q.get() is not end:
            pass
        t.join()

    delivered: dict[str, int] = {}

    def through(name: str, make: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            def produce(emit: Callable[[Any], None]) -> None:
                for x in items:
                    emit(x)

            n_out = 0
            for _ in callstream.from_callback(produce, sink=make()):
                n_out += 1
            delivered[name] = n_out

        return run

    def queue_prefilled() -> None:
        # the best case for a Queue: no contention, every get finds an item
        q: queue.Queue[Any] = queue.Queue()

        def fill() -> None:
            for x in items:
                q.put(x)

        t = threading.Thread(target=fill)
        t.start()
        t.join()
        for _ in range(n):
            q.get()

    rows = []
    base = median_time(queue_handoff, repeats)
    floor = [
        ("plain function call", plain_call),
        ("same-thread generator", generator),
        ("queue.Queue hand-off (threads, blocking get)", None),
        ("queue.Queue, filled first then drained (no contention)", queue_prefilled),
    ]
    for name, fn in floor:
        t = base if fn is None else median_time(fn, repeats)
        rows.append({"row": name, "items_per_s": n / t, "vs_queue": base / t})
    for name, make in SINKS.items():
        t = median_time(through(name, make), repeats)
        # items/s counts items emitted; a drop policy delivers fewer of them
        rows.append(
            {"row": f"from_callback, {name}", "items_per_s": n / t, "vs_queue": base / t, "delivered": delivered[name]}
        )
    return rows


def run(quick: bool) -> Rows:
    return transport(20_000 if quick else 1_000_000, 1 if quick else 5)
