"""callstream side by side with the alternatives, in one run: `make bench`.

Every figure is a median over repeats, and every claim is a ratio against an
alternative measured in the same process. Writes `benchmarks/results/latest.md`
and `latest.json`. `--quick` runs tiny sizes (the test suite uses it so the
benchmarks cannot rot).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import queue
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import callstream
from benchmarks.reliability import recipe_with_timeout
from callstream.testing import ScriptedChatModel

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


def pct(values: list[float], q: int) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


# -- 1. transport floor ---------------------------------------------------------------


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
        t = threading.Thread(target=lambda: [q.put(x) for x in items])
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


# -- 2. LangChain throughput -------------------------------------------------------------


def langchain_rows(n: int, repeats: int) -> list[dict[str, Any]]:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    model = ScriptedChatModel(responses=["x" * n])
    # The alternatives only get tokens from invoke() with streaming=True;
    # callstream does not need it (same model otherwise).
    streaming = ScriptedChatModel(responses=["x" * n], streaming=True)
    chain = ChatPromptTemplate.from_template("{q}") | model | StrOutputParser()

    def native() -> None:
        for _ in model.stream("hi"):
            pass

    def ours(sink: str) -> Callable[[], None]:
        def run() -> None:
            for _ in callstream.iter_callbacks(model, "hi", sink=sink).tokens():
                pass

        return run

    def native_chain() -> None:
        for _ in chain.stream({"q": "hi"}):
            pass

    def ours_chain() -> None:
        for _ in callstream.iter_callbacks(chain, {"q": "hi"}, sink="deque").tokens():
            pass

    def recipe() -> None:
        # the widely copied recipe: a handler that puts tokens, a thread, a None sentinel
        recipe_with_timeout(streaming, lambda token: True)

    def astream_events_chain() -> None:
        async def go() -> None:
            async for _ in chain.astream_events({"q": "hi"}, version="v2"):
                pass

        asyncio.run(go())

    def langgraph_messages() -> None:
        from langgraph.graph import START, MessagesState, StateGraph

        graph = StateGraph(MessagesState)
        graph.add_node("m", lambda s: {"messages": [model.invoke(s["messages"])]})
        graph.add_edge(START, "m")
        app = graph.compile()
        for _ in app.stream({"messages": [("user", "hi")]}, stream_mode="messages"):
            pass

    def async_iterator_handler() -> None:
        from langchain_classic.callbacks import AsyncIteratorCallbackHandler

        async def go() -> None:
            handler = AsyncIteratorCallbackHandler()
            task = asyncio.ensure_future(streaming.ainvoke("hi", {"callbacks": [handler]}))
            async for _ in handler.aiter():
                pass
            await task

        asyncio.run(go())

    def aiter_ours() -> None:
        async def go() -> None:
            async for _ in callstream.aiter_callbacks(model, "hi", sink="deque").tokens():
                pass

        asyncio.run(go())

    base = median_time(native, repeats)
    rows = [{"row": "native model.stream()", "tokens_per_s": n / base, "vs_native": 1.0}]
    cases: list[tuple[str, Callable[[], None]]] = [
        ("iter_callbacks, QueueSink", ours("queue")),
        ("iter_callbacks, DequeSink", ours("deque")),
        ("iter_callbacks, BoundedSink", ours("bounded")),
        ("native chain.stream() on prompt | model | parser", native_chain),
        ("iter_callbacks on prompt | model | parser, DequeSink", ours_chain),
        ("Queue + Thread + q.get(timeout=1) recipe", recipe),
        ("astream_events(v2) on prompt | model | parser", astream_events_chain),
        ('LangGraph stream_mode="messages", one node', langgraph_messages),
        ("AsyncIteratorCallbackHandler (langchain-classic)", async_iterator_handler),
        ("aiter_callbacks, DequeSink", aiter_ours),
    ]
    for name, fn in cases:
        t = median_time(fn, repeats)
        rows.append({"row": name, "tokens_per_s": n / t, "vs_native": base / t})
    per = {r["row"]: r for r in rows}
    for sink in ("QueueSink", "DequeSink", "BoundedSink"):
        r = per[f"iter_callbacks, {sink}"]
        r["overhead_ns_per_token"] = (1 / r["tokens_per_s"] - base / n) * 1e9
    return rows


# -- 3. latency, cancellation, memory ---------------------------------------------------------


def handoff_latency(samples: int) -> list[dict[str, Any]]:
    """One item every 0.5 ms; the producer stamps, the consumer measures."""

    def paced(emit: Callable[[Any], None]) -> None:
        for _ in range(samples):
            emit(time.perf_counter())
            time.sleep(0.0005)

    def plain() -> list[float]:
        q: queue.Queue[Any] = queue.Queue()
        t = threading.Thread(target=lambda: (paced(q.put), q.put(None)))
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


# -- 4. scale -----------------------------------------------------------------------------------


def scale(sync_streams: int, async_streams: int, tokens: int) -> list[dict[str, Any]]:
    """Many concurrent streams of a model paced like a real one (TTFT 200 ms, 50 tokens/s).

    The baseline for first-token latency is the same model streamed natively
    under the same concurrency (`model.stream()` in threads, `astream()` in tasks).
    """
    ttft = 0.2
    model = ScriptedChatModel(responses=["x" * tokens], ttft=ttft, delay=0.02)

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def scale_row(n: int, elapsed: float, firsts: list[float], peak: int) -> dict[str, Any]:
        return {
            "tokens_per_s": n * tokens / elapsed,
            "ttft_p50_ms": pct(firsts, 50) * 1e3,
            "ttft_p99_ms": pct(firsts, 99) * 1e3,
            "peak_threads": peak,
        }

    def threaded(n: int, make: Callable[[], Iterator[Any]]) -> dict[str, Any]:
        firsts: list[float] = []
        lock = threading.Lock()
        peak = [threading.active_count()]
        barrier = threading.Barrier(n)

        def one() -> None:
            barrier.wait()
            t0 = time.monotonic()
            first = None
            for _ in make():
                if first is None:
                    first = time.monotonic() - t0
                    with lock:
                        peak[0] = max(peak[0], threading.active_count())
            with lock:
                firsts.append(first or 0.0)

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        return scale_row(n, elapsed, firsts, peak[0])

    def in_tasks(n: int, make: Callable[[], Any]) -> dict[str, Any]:
        peak = [threading.active_count()]

        async def one() -> float:
            t0 = time.monotonic()
            first = None
            async for _ in make():
                if first is None:
                    first = time.monotonic() - t0
                    peak[0] = max(peak[0], threading.active_count())
            return first or 0.0

        async def main() -> list[float]:
            return await asyncio.gather(*(one() for _ in range(n)))

        t0 = time.monotonic()
        firsts = asyncio.run(main())
        elapsed = time.monotonic() - t0
        return scale_row(n, elapsed, firsts, peak[0])

    rows = []
    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"{sync_streams} threads, native model.stream()", lambda: threaded(sync_streams, lambda: model.stream("hi"))),
        (
            f"{sync_streams} threads, iter_callbacks",
            lambda: threaded(sync_streams, lambda: callstream.iter_callbacks(model, "hi", sink="deque").tokens()),
        ),
        (
            f"{async_streams} tasks, native model.astream()",
            lambda: in_tasks(async_streams, lambda: model.astream("hi")),
        ),
        (
            f"{async_streams} tasks, aiter_callbacks",
            lambda: in_tasks(async_streams, lambda: callstream.aiter_callbacks(model, "hi", sink="deque").tokens()),
        ),
    ]
    for name, fn in cases:
        gc.collect()
        row = {"row": name, "model_ttft_ms": ttft * 1e3, **fn(), "peak_rss_mb": rss_mb()}
        rows.append(row)
    return rows


def answer_only(repeats: int) -> list[dict[str, Any]]:
    """The latency answer-only streaming adds to the first answer token."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from callstream.testing import agent_script

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rows = []
    for holdback in (0, 40, 80, 160):
        plain, answer = [], []
        for _ in range(repeats):
            model = ScriptedChatModel(
                respond=agent_script(tool="add", args={"a": 1, "b": 2}, answer="The sum is {result}. " * 20),
                chunk_size=4,
                delay=0.01,  # 100 chunks/s, 4 characters each
            )
            agent = create_agent(model, tools=[add])
            inputs = {"messages": [("user", "1+2?")]}
            for out, kw in ((plain, {}), (answer, {"answer_only": True, "holdback": holdback})):
                t0 = time.monotonic()
                tokens = callstream.iter_callbacks(agent, inputs).tokens(**kw)  # type: ignore[arg-type]
                next(iter(tokens))
                out.append(time.monotonic() - t0)
                tokens.close()
        rows.append(
            {
                "row": f"answer_only, holdback={holdback} chars",
                "first_token_ms_all_tokens": statistics.median(plain) * 1e3,
                "first_answer_token_ms": statistics.median(answer) * 1e3,
                "note": "both wait for the answer call (the tool call has no text); the difference is the holdback",
            }
        )
    return rows


# -- report -----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {platform.system()}"}
    import os

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    parser.add_argument("--only", nargs="*", help="sections to run")
    parser.add_argument("--out", default=str(RESULTS), help="where to write latest.md / latest.json")
    args = parser.parse_args(argv)
    q = args.quick
    sections: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "transport": lambda: transport(20_000 if q else 1_000_000, 1 if q else 5),
        "langchain": lambda: langchain_rows(500 if q else 10_000, 1 if q else 5),
        "latency": lambda: handoff_latency(200 if q else 4_000),
        "cancellation": lambda: cancellation(20 if q else 1_000),
        "memory": lambda: memory((1_000, 5_000) if q else (10_000, 100_000)),
        "scale": lambda: scale(16 if q else 256, 32 if q else 1000, 5 if q else 20),
        "answer_only": lambda: answer_only(1 if q else 5),
        "reliability": lambda: __import__("benchmarks.reliability", fromlist=["run"]).run(quick=q),
    }
    chosen = args.only or list(sections)
    out = Path(args.out)
    results: dict[str, Any] = {}
    if args.only and (out / "latest.json").exists():  # refresh some sections, keep the others
        results = json.loads((out / "latest.json").read_text())
    results.update({"date": time.strftime("%Y-%m-%d"), "versions": versions()})
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        results[name] = sections[name]()
        print(table(name, results[name]), flush=True)
    md = [f"## callstream benchmarks — {results['date']}", "", versions_line(results["versions"]), ""]
    md += [table(name, results[name]) for name in sections if name in results]
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "latest.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
