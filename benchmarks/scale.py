"""Section `scale`: many concurrent streams of a chat model paced like a real one (issue 16).

One process, one model: first token after `TTFT`, then a token every `DELAY`,
async-native (`asyncio.sleep` between tokens, so the event loop is shared
exactly as with an HTTP model). Per row: first-token p50/p99 (from the start
of the stream to its first token of text), CPU per stream (the process's CPU
time over the run, divided by the streams), tokens/s (every token delivered,
over the run's wall time), and the ratios to the native row of the same face
measured in the same run (`model.astream()` for tasks, `model.stream()` for
threads). Each figure is the median over `rounds` rounds; the rows of a round
run one after the other, in the table's order, after a warm-up.

The async rows: native `astream()`; `astream()` with a no-op handler that
implements `tap_output_aiter` (the floor of any callback approach: LangChain's
own dispatch to one handler); `aiter_callbacks(...).tokens()` (default and
deque sinks); the peers: `astream_events` v2, LangChain's
`AsyncIteratorCallbackHandler`, LangGraph `stream_mode="messages"` (and
`aiter_callbacks` on the same graph). The sync rows: native `stream()` and
`iter_callbacks(...).tokens()`, one thread per stream. The HTTP rows: `ChatOpenAI`
(the real `openai` client) against the local OpenAI-compatible server, run in a
process of its own (its CPU is not counted), paced the same way: native
`astream()` and `aiter_callbacks(...).tokens()`, `http_streams` tasks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage

import callstream
from benchmarks.harness import Rows, pct
from callstream.testing import ScriptedChatModel

#: the model's pacing: first token after 200 ms, then one every 20 ms
TTFT = 0.2
DELAY = 0.02


class TapHandler(BaseCallbackHandler):
    """A no-op streaming handler: what LangChain costs to call one handler per event.

    Like callstream's handler, it runs inline (an async callback manager calls
    it in the loop's thread, in order) and implements the streaming-handler
    protocol; it does nothing with the events.
    """

    run_inline = True

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output


@dataclass
class Run:
    """One row of one round: what every stream saw, and what the process spent."""

    firsts: list[float]
    tokens: int
    streams: int
    wall: float
    cpu: float
    peak_threads: int


def _has_text(item: Any) -> bool:
    """A token of text, whatever the API yields: a str, a message chunk, a (chunk, metadata) pair."""
    if type(item) is str:
        return bool(item)
    if type(item) is tuple:
        item = item[0]
    return bool(getattr(item, "content", None))


def _event_has_text(event: Any) -> bool:
    return event["event"] == "on_chat_model_stream" and bool(event["data"]["chunk"].content)


AsyncCase = tuple[Callable[[], AsyncIterator[Any]], Callable[[Any], bool]]
SyncCase = Callable[[], Iterator[str]]


def in_tasks(n: int, case: AsyncCase) -> Run:
    """`n` streams as tasks on one event loop, all started at once."""
    make, is_token = case
    firsts: list[float] = []
    counts = [0]
    peak = [threading.active_count()]

    async def one() -> None:
        t0 = time.monotonic()
        first = None
        k = 0
        async for item in make():
            if is_token(item):
                k += 1
                if first is None:
                    first = time.monotonic() - t0
                    peak[0] = max(peak[0], threading.active_count())
        firsts.append(first if first is not None else float("nan"))
        counts[0] += k

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(n)))

    gc.collect()
    c0, t0 = time.process_time(), time.monotonic()
    asyncio.run(main())
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return Run(firsts, counts[0], n, wall, cpu, peak[0])


def in_threads(n: int, make: SyncCase) -> Run:
    """`n` streams, one thread each, released together by a barrier."""
    firsts: list[float] = []
    counts = [0]
    lock = threading.Lock()
    peak = [threading.active_count()]
    barrier = threading.Barrier(n)

    def one() -> None:
        barrier.wait()
        t0 = time.monotonic()
        first = None
        k = 0
        for text in make():
            if text:
                k += 1
                if first is None:
                    first = time.monotonic() - t0
                    active = threading.active_count()
                    with lock:
                        peak[0] = max(peak[0], active)
        with lock:
            firsts.append(first if first is not None else float("nan"))
            counts[0] += k

    gc.collect()
    c0, t0 = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return Run(firsts, counts[0], n, wall, cpu, peak[0])


def async_cases(model: ScriptedChatModel, streaming: ScriptedChatModel) -> dict[str, AsyncCase]:
    from langchain_classic.callbacks import AsyncIteratorCallbackHandler
    from langgraph.graph import START, MessagesState, StateGraph

    async def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    graph = builder.compile()

    def graph_input() -> MessagesState:
        return {"messages": [HumanMessage("hi")]}

    async def iterator_handler() -> AsyncIterator[str]:
        # LangChain's recipe: ainvoke in a task, tokens from the handler's queue
        handler = AsyncIteratorCallbackHandler()
        task = asyncio.ensure_future(streaming.ainvoke("hi", {"callbacks": [handler]}))
        async for token in handler.aiter():
            yield token
        await task

    return {
        "native model.astream()": (lambda: model.astream("hi"), _has_text),
        "astream() + no-op tap handler (floor)": (
            lambda: model.astream("hi", {"callbacks": [TapHandler()]}),
            _has_text,
        ),
        "aiter_callbacks(...).tokens()": (lambda: callstream.aiter_callbacks(model, "hi").tokens(), _has_text),
        "aiter_callbacks(..., sink='deque').tokens()": (
            lambda: callstream.aiter_callbacks(model, "hi", sink="deque").tokens(),
            _has_text,
        ),
        "astream_events(v2)": (lambda: model.astream_events("hi", version="v2"), _event_has_text),
        "AsyncIteratorCallbackHandler (langchain-classic)": (iterator_handler, _has_text),
        'LangGraph astream(stream_mode="messages"), one node': (
            lambda: graph.astream(graph_input(), stream_mode="messages"),
            _has_text,
        ),
        "aiter_callbacks(graph).tokens(), same graph": (
            lambda: callstream.aiter_callbacks(graph, graph_input()).tokens(),
            _has_text,
        ),
    }


def sync_cases(model: ScriptedChatModel) -> dict[str, SyncCase]:
    def native() -> Iterator[str]:
        for chunk in model.stream("hi"):
            yield chunk.text

    return {
        "native model.stream()": native,
        "iter_callbacks(...).tokens()": lambda: callstream.iter_callbacks(model, "hi").tokens(),
        "iter_callbacks(..., sink='deque').tokens()": lambda: callstream.iter_callbacks(
            model, "hi", sink="deque"
        ).tokens(),
    }


class _Server:
    """`python -m callstream.testing.openai_server` in a process of its own."""

    def __init__(self, ttft: float, delay: float, tokens: int) -> None:
        args = [sys.executable, "-m", "callstream.testing.openai_server", "--tokens", str(tokens)]
        args += ["--ttft-ms", str(round(ttft * 1000)), "--delay-ms", str(round(delay * 1000))]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.stop()
            raise RuntimeError(f"the local OpenAI-compatible server did not start: {self.base_url!r}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def http_cases(base_url: str) -> dict[str, AsyncCase]:
    from langchain_openai import ChatOpenAI
    from openai import DefaultAsyncHttpxClient

    # One client for all the streams of a run, as a service has (its pool holds every
    # stream's connection); a run is an event loop of its own, and so is its client.
    models: dict[int, ChatOpenAI] = {}

    def model() -> ChatOpenAI:
        loop = id(asyncio.get_running_loop())
        if loop not in models:
            models.clear()
            models[loop] = ChatOpenAI(
                model="scripted",
                base_url=base_url,
                api_key="none",  # type: ignore[arg-type]
                max_retries=0,
                # its own HTTP client: langchain-openai's default one is shared across loops
                http_async_client=DefaultAsyncHttpxClient(),
            )
        return models[loop]

    return {
        "native ChatOpenAI.astream()": (lambda: model().astream("hi"), _has_text),
        "aiter_callbacks(ChatOpenAI).tokens()": (
            lambda: callstream.aiter_callbacks(model(), "hi").tokens(),
            _has_text,
        ),
    }


def _row(name: str, runs: list[Run]) -> dict[str, Any]:
    med = statistics.median
    return {
        "row": name,
        "streams": runs[0].streams,
        "ttft_p50_ms": med(pct(r.firsts, 50) for r in runs) * 1e3,
        "ttft_p99_ms": med(pct(r.firsts, 99) for r in runs) * 1e3,
        "cpu_ms_per_stream": med(r.cpu / r.streams for r in runs) * 1e3,
        "tokens_per_s": med(r.tokens / r.wall for r in runs),
        "tokens_per_stream": runs[0].tokens / runs[0].streams,
        "peak_threads": max(r.peak_threads for r in runs),
    }


def _ratios(rows: Rows) -> None:
    """Each row against the first row of its face (the native one), same run."""
    base = rows[0]
    for r in rows:
        r["p50_vs_native"] = r["ttft_p50_ms"] / base["ttft_p50_ms"]
        r["p99_vs_native"] = r["ttft_p99_ms"] / base["ttft_p99_ms"]
        r["cpu_vs_native"] = r["cpu_ms_per_stream"] / base["cpu_ms_per_stream"]
        r["tps_vs_native"] = r["tokens_per_s"] / base["tokens_per_s"]


def scale(
    sync_streams: int,
    async_streams: int,
    tokens: int,
    rounds: int = 3,
    *,
    ttft: float = TTFT,
    delay: float = DELAY,
    only: tuple[str, ...] | None = None,
    http_streams: int = 0,
) -> Rows:
    """The scale table: async rows (`async_streams` tasks), then sync rows (`sync_streams` threads)."""
    model = ScriptedChatModel(responses=["x" * tokens], ttft=ttft, delay=delay)
    # the handler recipe only gets tokens from ainvoke with streaming=True (same model otherwise)
    streaming = ScriptedChatModel(responses=["x" * tokens], ttft=ttft, delay=delay, streaming=True)
    acases = async_cases(model, streaming)
    scases = sync_cases(model)
    if only is not None:
        acases = {k: v for k, v in acases.items() if k in only or k.startswith("native")}
        scases = {k: v for k, v in scases.items() if k in only or k.startswith("native")}
    for case in acases.values():  # warm-up: imports, pydantic and LangChain caches
        in_tasks(4, case)
    for scase in scases.values():
        in_threads(4, scase)
    aruns: dict[str, list[Run]] = {name: [] for name in acases}
    sruns: dict[str, list[Run]] = {name: [] for name in scases}
    for _ in range(rounds):
        for name, case in acases.items():
            aruns[name].append(in_tasks(async_streams, case))
        for name, scase in scases.items():
            sruns[name].append(in_threads(sync_streams, scase))
    arows = [_row(f"{async_streams} tasks, {name}", runs) for name, runs in aruns.items()]
    srows = [_row(f"{sync_streams} threads, {name}", runs) for name, runs in sruns.items()]
    _ratios(arows)
    _ratios(srows)
    hrows: Rows = []
    if http_streams:
        server = _Server(ttft, delay, tokens)
        try:
            hcases = http_cases(server.base_url)
            for case in hcases.values():
                in_tasks(4, case)
            hruns: dict[str, list[Run]] = {name: [] for name in hcases}
            for _ in range(rounds):
                for name, case in hcases.items():
                    hruns[name].append(in_tasks(http_streams, case))
        finally:
            server.stop()
        hrows = [_row(f"{http_streams} tasks over HTTP, {name}", runs) for name, runs in hruns.items()]
        _ratios(hrows)
    return [*arows, *srows, *hrows]


def run(quick: bool) -> Rows:
    if quick:
        return scale(16, 32, 5, rounds=1, ttft=0.05, delay=0.005, http_streams=8)
    return scale(256, 1000, 20, http_streams=200)
