"""Section `langchain`: tokens/s of one unpaced stream, callstream against native streaming and the peers.

One stream of `n` tokens (10,000 in `make bench`) from a model with no pacing:
the cost per token of each way to get them. The floor rows run the model with
a no-op handler that implements the streaming-handler protocol: what
LangChain's dispatch of each token to one more handler costs, which any
callback approach pays. `vs_native` compares with
`model.stream()`; the async rows also with `model.astream()` (`vs_native_astream`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import callstream
from benchmarks.harness import Rows, median_times
from benchmarks.reliability import recipe_with_timeout
from benchmarks.scale import TapHandler
from callstream.sinks import SinkName
from callstream.testing import ScriptedChatModel


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

    def floor() -> None:
        # the floor of any callback approach: LangChain's dispatch of each token to one no-op handler
        for _ in model.stream("hi", {"callbacks": [TapHandler()]}):
            pass

    def ours(sink: SinkName) -> Callable[[], None]:
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
        from langchain_core.messages import HumanMessage
        from langgraph.graph import START, MessagesState, StateGraph

        graph = StateGraph(MessagesState)
        graph.add_node("m", lambda s: {"messages": [model.invoke(s["messages"])]})
        graph.add_edge(START, "m")
        app = graph.compile()
        for _ in app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"):
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

    def native_async() -> None:
        async def go() -> None:
            async for _ in model.astream("hi"):
                pass

        asyncio.run(go())

    def floor_async() -> None:
        async def go() -> None:
            async for _ in model.astream("hi", {"callbacks": [TapHandler()]}):
                pass

        asyncio.run(go())

    def aiter_ours(sink: SinkName) -> Callable[[], None]:
        def run() -> None:
            async def go() -> None:
                async for _ in callstream.aiter_callbacks(model, "hi", sink=sink).tokens():
                    pass

            asyncio.run(go())

        return run

    def astream_events_model() -> None:
        async def go() -> None:
            async for _ in model.astream_events("hi", version="v2"):
                pass

        asyncio.run(go())

    # (row, run, async): the async rows are also compared with native astream()
    cases: list[tuple[str, Callable[[], None], bool]] = [
        ("native model.stream()", native, False),
        ("model.stream() + no-op tap handler (floor)", floor, False),
        ("iter_callbacks, QueueSink", ours("queue"), False),
        ("iter_callbacks, DequeSink", ours("deque"), False),
        ("iter_callbacks, BoundedSink", ours("bounded"), False),
        ("Queue + Thread + q.get(timeout=1) recipe", recipe, False),
        ("native chain.stream() on prompt | model | parser", native_chain, False),
        ("iter_callbacks on prompt | model | parser, DequeSink", ours_chain, False),
        ('LangGraph stream_mode="messages", one node', langgraph_messages, False),
        ("native model.astream()", native_async, True),
        ("model.astream() + no-op tap handler (floor)", floor_async, True),
        ("aiter_callbacks, QueueSink", aiter_ours("queue"), True),
        ("aiter_callbacks, DequeSink", aiter_ours("deque"), True),
        ("astream_events(v2) on the model", astream_events_model, True),
        ("astream_events(v2) on prompt | model | parser", astream_events_chain, True),
        ("AsyncIteratorCallbackHandler (langchain-classic)", async_iterator_handler, True),
    ]
    times = median_times({name: fn for name, fn, _ in cases}, repeats)
    base, abase = times["native model.stream()"], times["native model.astream()"]
    rows: Rows = []
    for name, _, is_async in cases:
        t = times[name]
        row = {"row": name, "tokens_per_s": n / t, "vs_native": base / t}
        if is_async:
            row["vs_native_astream"] = abase / t
        rows.append(row)
    per = {r["row"]: r for r in rows}
    for sink in ("QueueSink", "DequeSink", "BoundedSink"):
        r = per[f"iter_callbacks, {sink}"]
        r["overhead_ns_per_token"] = (1 / r["tokens_per_s"] - base / n) * 1e9
    return rows


def run(quick: bool) -> Rows:
    return langchain_rows(500 if quick else 10_000, 1 if quick else 5)
