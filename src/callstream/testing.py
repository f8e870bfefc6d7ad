"""Test support that ships with callstream.

- `ScriptedChatModel` / `ScriptedLLM`: deterministic LangChain models (tokens,
  pacing, failures, tool calls) for your own tests and for the demo.
- `check_sink(make_sink)` runs the sink conformance checks against any `Sink`
  implementation (the built-in ones are checked with it too), in the spirit of
  `trio.testing.check_one_way_stream`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, BaseLLM, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    GenerationChunk,
    LLMResult,
)
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from .sinks import Cancelled, Sink

__all__ = ("ScriptedChatModel", "ScriptedLLM", "agent_script", "check_sink", "tool_call")


class _AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


def _drain(sink: Sink, deadline: float) -> list[Any]:
    got: list[Any] = []
    while time.monotonic() < deadline:
        batch = sink.take(0.05)
        while batch:
            got.append(batch.popleft())
        if sink.statistics().finished and not sink.take(0):
            return got
    raise AssertionError(f"sink did not finish in time; got {len(got)} items")


def check_sink(make_sink: Callable[[], Sink], *, timeout: float = 5.0) -> None:
    """Run the generic conformance checks against sinks made by `make_sink`.

    Checks: order and identity of awkward items (`None`, `""`, `"[DONE]"`,
    exceptions, always-equal objects) across a thread; that `take(0)` never
    blocks; that `finish()` wakes a waiting consumer; that `close()` wakes a
    waiting consumer, discards the buffer and makes `put` raise `Cancelled`;
    that `set_wakeup` fires once from the producer's side; and that
    `statistics()` reports what happened.

    Raises:
        AssertionError: describing the first check that failed.
    """
    deadline = time.monotonic() + timeout

    # 1. order and identity, producer in another thread
    items: list[Any] = [None, "", "[DONE]", 0, False, b"", _AlwaysEqual(), ValueError("x"), StopIteration()]
    items += [f"t{i}" for i in range(200)]
    sink = make_sink()

    def produce() -> None:
        for item in items:
            sink.put(item)
        sink.finish()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    got = _drain(sink, deadline)
    t.join(timeout)
    assert len(got) == len(items), f"{len(items)} items put, {len(got)} taken"
    for i, (a, b) in enumerate(zip(got, items)):
        assert a is b, f"item {i}: {a!r} is not the object put ({b!r})"

    # 2. take(0) does not block on an empty sink
    sink = make_sink()
    t0 = time.monotonic()
    assert not sink.take(0), "take(0) on an empty sink returned items"
    assert time.monotonic() - t0 < 0.5, "take(0) blocked"

    # 3. finish() and close() wake a consumer blocked in take(None)
    for end in ("finish", "close"):
        sink = make_sink()
        woke = threading.Event()

        def consume(s: Sink = sink, e: threading.Event = woke) -> None:
            s.take(None)
            e.set()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        _wait_until(partial(_consumers_waiting, sink), deadline, "consumer to block")
        getattr(sink, end)()
        assert woke.wait(max(deadline - time.monotonic(), 0.1)), f"{end}() did not wake a waiting consumer"

    # 4. close() discards buffered items and rejects later puts
    sink = make_sink()
    sink.put("a")
    sink.close()
    sink.close()  # idempotent
    assert not sink.take(0), "items survived close()"
    for late in ("b", None, 0, False, ""):  # falsy items too (anyio #731)
        try:
            sink.put(late)
        except Cancelled:
            continue
        raise AssertionError(f"put({late!r}) after close() did not raise Cancelled")
    assert sink.statistics().closed

    # 5. set_wakeup fires once on the next put
    sink = make_sink()
    fired: list[int] = []
    sink.set_wakeup(lambda: fired.append(1))
    sink.put("x")
    sink.put("y")
    assert fired == [1], f"wakeup fired {len(fired)} times for two puts (expected once)"
    sink.set_wakeup(lambda: fired.append(2))
    sink.set_wakeup(None)
    sink.finish()
    assert fired == [1], "a disarmed wakeup fired"


def _consumers_waiting(sink: Sink) -> bool:
    return sink.statistics().consumers_waiting == 1


def _wait_until(pred: Callable[[], bool], deadline: float, what: str) -> None:
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


# -- scripted models ----------------------------------------------------------------

Response = str | AIMessage
Respond = Callable[[list[BaseMessage]], Response]


def tool_call(name: str, args: dict[str, Any], id: str | None = None, text: str = "") -> AIMessage:
    """A scripted response that calls a tool (optionally after some `text`)."""
    return AIMessage(
        content=text, tool_calls=[{"name": name, "args": args, "id": id or f"call_{name}", "type": "tool_call"}]
    )


def agent_script(*, tool: str, args: dict[str, Any], answer: str, preamble: str = "") -> Respond:
    """A `respond` function for a one-tool agent: call `tool`, then answer.

    Stateless (it looks at the conversation), so one model instance can serve
    many concurrent agents. The final answer is `answer` with `{result}`
    replaced by the tool's output.
    """

    def respond(messages: list[BaseMessage]) -> Response:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            return answer.replace("{result}", str(results[-1].content))
        return tool_call(tool, args, text=preamble)

    return respond


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedChatModel(BaseChatModel):
    """A deterministic chat model for tests and demos: no network, no key.

    Each call answers with the next item of `responses` (cycling), or with
    `respond(messages)` when given. A `str` response streams in pieces of
    `chunk_size` characters; an `AIMessage` with `tool_calls` streams its text
    and then the tool calls as tool-call chunks. `ttft` and `delay` pace the
    stream; `fail_after=n` raises `error` after `n` tokens. Counters
    (`calls`, `tokens_sent`) and the `finished` event let tests check that a
    cancelled run really stopped.

    ```python
    model = ScriptedChatModel(responses=["Hello there!"], delay=0.01)
    ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responses: list[Response] = Field(default_factory=lambda: ["Hello from callstream!"])  # type: ignore[arg-type]
    respond: Respond | None = None
    chunk_size: int = 1
    ttft: float = 0.0
    delay: float = 0.0
    fail_after: int | None = None
    error: BaseException = Field(default_factory=lambda: RuntimeError("scripted model failure"))
    #: as on real chat models: `streaming=True` makes `invoke` stream for any handler
    streaming: bool = False
    _calls: int = PrivateAttr(default=0)
    _tokens: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _finished: threading.Event = PrivateAttr(default_factory=threading.Event)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def calls(self) -> int:
        """How many times the model was called."""
        return self._calls

    @property
    def tokens_sent(self) -> int:
        """How many token chunks it produced, over all calls."""
        return self._tokens

    @property
    def finished(self) -> threading.Event:
        """Set each time a call ends, however it ended."""
        return self._finished

    def bind_tools(self, tools: Any, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) if isinstance(t, (BaseTool, dict)) or callable(t) else t for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            index = self._calls
            self._calls += 1
            self._finished.clear()
        response = self.respond(messages) if self.respond is not None else self.responses[index % len(self.responses)]
        return AIMessage(content=response) if isinstance(response, str) else response

    def _usage(self, messages: list[BaseMessage], output_tokens: int) -> dict[str, int]:
        """Scripted token usage (about 4 characters a token in), as providers report it."""
        chars = sum(len(str(m.content)) for m in messages)
        inputs = chars // 4 + 1
        return {"input_tokens": inputs, "output_tokens": output_tokens, "total_tokens": inputs + output_tokens}

    def _chunks(self, message: AIMessage, messages: list[BaseMessage] | None = None) -> list[AIMessageChunk]:
        text = message.content if isinstance(message.content, str) else message.text
        chunks = [AIMessageChunk(content=p) for p in _pieces(text, self.chunk_size)]
        for i, call in enumerate(message.tool_calls):
            args = json.dumps(call["args"])
            half = len(args) // 2
            chunks.append(
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[{"name": call["name"], "args": args[:half], "id": call["id"], "index": i}],
                )
            )
            chunks.append(
                AIMessageChunk(
                    content="", tool_call_chunks=[{"name": None, "args": args[half:], "id": None, "index": i}]
                )
            )
        if chunks and messages is not None:  # the last chunk reports usage, as providers' do
            last = chunks[-1]
            chunks[-1] = last.model_copy(update={"usage_metadata": self._usage(messages, len(chunks))})
        return chunks

    def _count(self, n: int) -> None:
        if self.fail_after is not None and n >= self.fail_after:
            raise self.error
        with self._lock:
            self._tokens += 1

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            message = self._next(messages)
            if self.ttft:
                time.sleep(self.ttft)
            n_chunks = len(self._chunks(message))
            for n in range(n_chunks):
                self._count(n)
            message = message.model_copy(update={"usage_metadata": self._usage(messages, n_chunks)})
            return ChatResult(generations=[ChatGeneration(message=message)])
        finally:
            self._finished.set()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        try:
            chunks = self._chunks(self._next(messages), messages)
            if self.ttft:
                time.sleep(self.ttft)
            for n, chunk in enumerate(chunks):
                if n and self.delay:
                    time.sleep(self.delay)
                self._count(n)
                gen = ChatGenerationChunk(message=chunk)
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=gen)
                yield gen
        finally:
            self._finished.set()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        try:
            chunks = self._chunks(self._next(messages), messages)
            if self.ttft:
                await asyncio.sleep(self.ttft)
            for n, chunk in enumerate(chunks):
                if n and self.delay:
                    await asyncio.sleep(self.delay)
                self._count(n)
                gen = ChatGenerationChunk(message=chunk)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=gen)
                yield gen
        finally:
            self._finished.set()


class ScriptedLLM(BaseLLM):
    """A deterministic text-completion LLM (the legacy `BaseLLM` interface).

    Streams `responses` (cycling) in pieces of `chunk_size` characters,
    paced by `delay`; `fail_after=n` raises `error` after `n` tokens.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responses: list[str] = Field(default_factory=lambda: ["Hello from callstream!"])
    chunk_size: int = 1
    delay: float = 0.0
    fail_after: int | None = None
    error: BaseException = Field(default_factory=lambda: RuntimeError("scripted llm failure"))
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted-llm"

    @property
    def calls(self) -> int:
        return self._calls

    def _text(self) -> str:
        index = self._calls
        self._calls += 1
        return self.responses[index % len(self.responses)]

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        from langchain_core.outputs import Generation

        return LLMResult(generations=[[Generation(text=self._text())] for _ in prompts])

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for n, piece in enumerate(_pieces(self._text(), self.chunk_size)):
            if n and self.delay:
                time.sleep(self.delay)
            if self.fail_after is not None and n >= self.fail_after:
                raise self.error
            chunk = GenerationChunk(text=piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
