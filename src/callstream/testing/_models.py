"""Scripted LangChain models: deterministic tokens, pacing, failures and tool calls."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
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

__all__ = ("ScriptedChatModel", "ScriptedLLM", "agent_script", "tool_call")

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


def _fresh_error(error: BaseException) -> BaseException:
    """A new copy of `error` for one run, so runs do not share one exception object.

    Raising the same object on every run would pile up what each run adds to it:
    notes (`add_note`, as callstream's), `__traceback__` frames, `__context__`.
    `copy.copy` keeps the type, `args` and attributes, and the copy starts with
    no traceback, cause or context; notes the object already had are copied, not
    shared. An exception whose class cannot be rebuilt from its `args` (an
    `__init__` with required keyword arguments, such as the openai SDK's
    `APIStatusError`) is raised as the object itself.
    """
    try:
        fresh = copy.copy(error)
    except Exception:  # its __init__ cannot be called again with its args
        return error
    if type(fresh) is not type(error):  # pragma: no cover - a __reduce__ that builds something else
        return error
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        fresh.__notes__ = list(notes)
    return fresh


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedChatModel(BaseChatModel):
    """A deterministic chat model for tests and demos: no network, no key.

    Each call answers with the next item of `responses` (cycling), or with
    `respond(messages)` when given. A `str` response streams in pieces of
    `chunk_size` characters; an `AIMessage` with `tool_calls` streams its text
    and then the tool calls as tool-call chunks. `ttft` and `delay` pace the
    stream; `fail_after=n` raises `error` after `n` tokens: each failing run
    raises a fresh copy of it (`copy.copy`: same type, args and attributes),
    so notes and traceback frames do not pile up across runs, and
    `last_error` is the object the last failing run raised. An exception
    that cannot be rebuilt from its args (required keyword arguments) is
    raised as the object itself. Counters (`calls`, `tokens_sent`) and
    the `finished` event let tests check that a cancelled run really stopped.

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
    _last_error: BaseException | None = PrivateAttr(default=None)
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
    def last_error(self) -> BaseException | None:
        """The exception the last failing run raised (a fresh copy of `error`), if any."""
        return self._last_error

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
            self._last_error = _fresh_error(self.error)
            raise self._last_error
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
    paced by `delay`; `fail_after=n` raises a fresh copy of `error` after
    `n` tokens (as `ScriptedChatModel` does; `last_error` is that copy).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responses: list[str] = Field(default_factory=lambda: ["Hello from callstream!"])
    chunk_size: int = 1
    delay: float = 0.0
    fail_after: int | None = None
    error: BaseException = Field(default_factory=lambda: RuntimeError("scripted llm failure"))
    _calls: int = PrivateAttr(default=0)
    _last_error: BaseException | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "scripted-llm"

    @property
    def calls(self) -> int:
        """How many times the model was called."""
        return self._calls

    @property
    def last_error(self) -> BaseException | None:
        """The exception the last failing run raised (a fresh copy of `error`), if any."""
        return self._last_error

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
                self._last_error = _fresh_error(self.error)
                raise self._last_error
            chunk = GenerationChunk(text=piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
