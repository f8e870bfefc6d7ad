"""Fault scenarios run against each approach, outcome per cell (RELIABILITY.md, side by side).

Every consumer runs in a watchdog thread: a cell that has not finished after
`WATCHDOG` seconds is reported as hung (its daemon thread is left behind, which
is the point).
"""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

import callstream
from callstream.testing import ScriptedChatModel

WATCHDOG = 3.0
STALL = 4.0
TOKENS = 200


def _model(approach: Callable[..., None], **kw: Any) -> ScriptedChatModel:
    # The alternatives need `streaming=True` (a plain handler gets no tokens
    # from invoke otherwise); callstream does not.
    if approach not in (callstream_sync, callstream_async):
        kw["streaming"] = True
    return ScriptedChatModel(responses=["x" * TOKENS], **kw)


# -- the approaches: consume(model, on_token) -> None; on_token returns False to break --------


def naive_recipe(model: Any, on_token: Callable[[str], bool], timeout: float | None = None) -> None:
    """Thread + Queue + a handler that puts tokens and a None sentinel on llm_end."""
    q: queue.Queue[Any] = queue.Queue()

    class Handler(BaseCallbackHandler):
        def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kw: Any) -> None:
            q.put(token)

        def on_llm_end(self, response: Any, **kw: Any) -> None:
            q.put(None)

    threading.Thread(target=lambda: model.invoke("hi", {"callbacks": [Handler()]}), daemon=True).start()
    while True:
        token = q.get(timeout=timeout) if timeout else q.get()
        if token is None or on_token(token) is False:
            return


def recipe_with_timeout(model: Any, on_token: Callable[[str], bool]) -> None:
    try:
        naive_recipe(model, on_token, timeout=1.0)
    except queue.Empty:
        return  # the recipe's "end": indistinguishable from a slow model


def async_iterator_handler(model: Any, on_token: Callable[[str], bool]) -> None:
    from langchain_classic.callbacks import AsyncIteratorCallbackHandler

    async def go() -> None:
        handler = AsyncIteratorCallbackHandler()
        task = asyncio.ensure_future(model.ainvoke("hi", {"callbacks": [handler]}))
        async for token in handler.aiter():
            if on_token(token) is False:
                break
        await task

    asyncio.run(go())


def astream_events(model: Any, on_token: Callable[[str], bool]) -> None:
    async def go() -> None:
        async for event in model.astream_events("hi", version="v2"):
            text = event["data"]["chunk"].content if event["event"] == "on_chat_model_stream" else ""
            if text and on_token(text) is False:
                break

    asyncio.run(go())


def callstream_sync(model: Any, on_token: Callable[[str], bool], **kw: Any) -> None:
    with callstream.iter_callbacks(model, "hi", **kw) as s:
        for token in s.tokens():
            if on_token(token) is False:
                break


def callstream_async(model: Any, on_token: Callable[[str], bool], **kw: Any) -> None:
    async def go() -> None:
        async with callstream.aiter_callbacks(model, "hi", **kw) as s:
            async for token in s.tokens():
                if on_token(token) is False:
                    break

    asyncio.run(go())


APPROACHES: dict[str, Callable[..., None]] = {
    "Queue + Thread + None sentinel": naive_recipe,
    "same, q.get(timeout=1)": recipe_with_timeout,
    "AsyncIteratorCallbackHandler": async_iterator_handler,
    "astream_events v2": astream_events,
    "callstream iter_callbacks": callstream_sync,
    "callstream aiter_callbacks": callstream_async,
}


def _watch(fn: Callable[[], Any]) -> tuple[str, Any]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:
            box.append(("raised", exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WATCHDOG)
    if t.is_alive():
        return "hung", None
    return box[0]


def scenario_error(approach: Callable[..., None]) -> str:
    model = _model(approach, fail_after=50, error=ValueError("model died"))
    got: list[str] = []
    status, value = _watch(lambda: approach(model, got.append))
    if status == "hung":
        return f"hung past {WATCHDOG:g} s watchdog ({len(got)} tokens)"
    if status == "raised":
        return f"raised {type(value).__name__} after {len(got)} tokens"
    return f"ended silently after {len(got)} tokens (error lost)"


def scenario_break(approach: Callable[..., None]) -> str:
    model = _model(approach, delay=0.002)
    got: list[str] = []
    status, _ = _watch(lambda: approach(model, lambda t: got.append(t) or len(got) < 10))
    if status == "hung":
        return "hung"
    sent_at_break = model.tokens_sent
    model.finished.wait(WATCHDOG)
    extra = model.tokens_sent - sent_at_break
    return f"model stopped ({extra} more tokens)" if extra < 25 else f"model kept running ({extra} more tokens)"


def scenario_timeout(approach: Callable[..., None]) -> str:
    model = _model(approach, ttft=STALL)  # a stalled model: nothing for STALL seconds
    t0 = time.monotonic()
    kw = {"first_token_timeout": 0.3} if approach in (callstream_sync, callstream_async) else {}
    status, value = _watch(lambda: approach(model, lambda t: True, **kw))
    if status == "hung":
        return f"hung past {WATCHDOG:g} s watchdog (no timeout option)"
    if status == "raised":
        return f"raised {type(value).__name__} after {time.monotonic() - t0:.2f} s"
    return f"ended after {time.monotonic() - t0:.2f} s, no error"


def scenario_abandoned(approach: Callable[..., None]) -> str:
    if approach not in (callstream_sync,):
        return "n/a (no iterator object to drop)"
    model = _model(approach, delay=0.002)
    s = callstream.iter_callbacks(model, "hi")
    next(s)
    del s
    gc.collect()
    sent = model.tokens_sent
    model.finished.wait(WATCHDOG)
    return f"model stopped ({model.tokens_sent - sent} more tokens)"


def scenario_slow_consumer(approach: Callable[..., None]) -> str:
    model = _model(approach)
    got: list[str] = []

    def slow(token: str) -> bool:
        if token:
            got.append(token)
        if len(got) % 50 == 0:
            time.sleep(0.01)
        return True

    status, value = _watch(lambda: approach(model, slow))
    if status != "ok":
        return f"{status} {type(value).__name__ if value else ''} ({len(got)}/{TOKENS})"
    return f"delivered {len(got)}/{TOKENS}"


SCENARIOS = {
    "producer error mid-stream": scenario_error,
    "break after 10 tokens": scenario_break,
    "stalled model, timeout": scenario_timeout,
    "abandoned stream (GC)": scenario_abandoned,
    "slow consumer": scenario_slow_consumer,
}


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    unhandled: list[Any] = []
    hook = threading.excepthook
    threading.excepthook = unhandled.append  # count, do not print, the recipes' dying threads
    try:
        for name, approach in APPROACHES.items():
            row: dict[str, Any] = {"row": name}
            before = threading.active_count()
            unhandled.clear()
            for scenario, fn in SCENARIOS.items():
                row[scenario] = fn(approach)
            time.sleep(STALL + 0.2)  # the stalled model reaches its next step
            row["threads left"] = max(0, threading.active_count() - before)
            row["unhandled thread exceptions"] = len(unhandled)
            rows.append(row)
    finally:
        threading.excepthook = hook
    return rows
