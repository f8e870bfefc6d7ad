"""OpenAI-shaped output, for code and clients written for the OpenAI SDK.

```python
for chunk in callstream.openai.chunks(callstream.iter_callbacks(chain, inputs)):
    print(chunk.choices[0].delta.content or "", end="")   # as with stream=True

# an endpoint any OpenAI client can consume unchanged
return StreamingHttpResponse(callstream.openai.sse(stream), headers=SSE_HEADERS)
```

Tokens become `choices[0].delta.content`; the last choice chunk carries
`finish_reason`. With `tool_calls=True`, tools show as the OpenAI API would
show them to a client that runs its own tools, without ever asking it to run
one the stream already ran:

- a tool call the stream runs (an agent's: a `tool_start` event follows the
  model's request) is sent as `delta.executed_tool_calls` (a list of
  `{"id", "type": "function", "function": {"name", "arguments"}}`) when it
  starts, and its result as `delta.tool_results` (a list of
  `{"tool_call_id", "name", "content"}`, or `"error"`: the exception's type)
  when it ends. An OpenAI client's tool loop reads `delta.tool_calls` and
  `finish_reason` only, so it never runs these again; the SDK keeps them as
  extra fields (`chunk.choices[0].delta.executed_tool_calls`);
- the tool calls of the last model call that nothing ran (a model with
  tools bound and no agent, or an agent stopped before its tools) are sent
  at the end as `delta.tool_calls`, then `finish_reason="tool_calls"`;
- otherwise the stream ends with `finish_reason="stop"`.

A LangGraph run that paused on `interrupt()` (human in the loop) ends with
`finish_reason: "interrupt"`, a value of ours beside OpenAI's (tool calls the
graph will run on resume are not offered to the client), and its last
chunk's choice carries the pause as an extra field:
`choices[0].interrupt == {"interrupts": [{"id", "value", "node", "ns"}, ...],
"checkpoint_id"}` (the `interrupt` event's data). The OpenAI SDK keeps both:
`chunk.choices[0].finish_reason == "interrupt"`, and the payload in
`chunk.choices[0].model_extra["interrupt"]`. A client that knows neither sees
an ordinary end of message.

With `include_usage=True` (what `stream_options={"include_usage": true}` asks
of the API), every chunk has `"usage": null` and a last chunk with empty
`choices` carries the usage the model(s) reported, summed (`stream.summary.usage`;
zeros when the model reported none).

The wire format is `data: {...}` lines ending with `data: [DONE]`; an error
after the headers is sent as `data: {"error": {...}}`, which the OpenAI SDK
raises as `APIError`. Text passes exactly: a lone or split UTF-16 surrogate
as its JSON escape (see `callstream.sse`). `chunks()` needs the `openai`
package (`pip install 'callstream[openai]'`); the wire format does not.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._astream import AsyncStream
from ._stream import Stream
from ._web import (
    IDLE,
    PING,
    aencode,
    aitems,
    check,
    default_error_message,
    encode,
    items,
    json_text,
    logger,
    safe,
    utf8,
)
from .events import Event, token_text

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

__all__ = ("achunks", "asse", "chat_completion", "chunks", "openai_usage", "sse")


@dataclass
class _Call:
    """A tool call a model asked for, and whether the stream then ran it."""

    id: str
    name: str
    arguments: str
    executed: bool = False

    def wire(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def openai_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """OpenAI's `usage` from LangChain's (`input_tokens`...) or OpenAI's own keys; zeros if None."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    total = usage.get("total_tokens", prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


class _ChunkBuilder:
    """Builds `chat.completion.chunk` dicts from stream items (sans-I/O).

    With `tool_calls=True`, a model's tool calls are held until the stream shows
    what became of them. A call the stream then runs (a `tool_start` follows)
    is shown as `delta.executed_tool_calls` and its result as
    `delta.tool_results`: fields an OpenAI client's tool loop does not read.
    The calls of the last model call that nothing ran are sent at the end as
    `delta.tool_calls`, with `finish_reason="tool_calls"`, for the client to run.
    """

    def __init__(self, model: str = "callstream", *, tool_calls: bool = False, include_usage: bool = False) -> None:
        self.model = model
        self.tool_calls = tool_calls
        self.include_usage = include_usage
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.started = False
        self._run: str | None = None  # the model call whose tool calls are pending
        self._chunks: dict[Any, _Call] = {}  # its calls being streamed, by index
        self._pending: list[_Call] = []
        self._running: dict[str, str] = {}  # tool run id -> call id
        #: the data of the run's `interrupt` event (a LangGraph graph paused), or None
        self.interrupt: dict[str, Any] | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _deltas(self, *deltas: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        out.extend(self._chunk(d) for d in deltas)
        return out

    def item(self, item: Any) -> list[dict[str, Any]]:
        text = token_text(item)
        if text is not None:  # a token item: a str, or a token Event
            if self.tool_calls and type(item) is Event:
                self._collect(item)
            return self._deltas({"content": text}) if text else []
        if not isinstance(item, Event):
            return []
        if item.kind == "interrupt":
            self.interrupt = safe(item.data)
            return []
        if not self.tool_calls:
            return []
        if item.kind == "llm_start":
            self._new_run(item.run_id)
        elif item.kind == "llm_end":
            self._ended(item)
        elif item.kind == "tool_start":
            return self._deltas({"executed_tool_calls": [self._executed(item)]})
        elif item.kind in ("tool_end", "tool_error"):
            result: dict[str, Any] = {"tool_call_id": self._running.pop(item.run_id, "call_" + item.run_id)}
            result["name"] = item.name
            if item.kind == "tool_end":
                result["content"] = _content(item.data.get("output"))
            else:
                result["error"] = type(item.data.get("error")).__name__
            return self._deltas({"tool_results": [result]})
        return []

    def _new_run(self, run_id: str) -> None:
        if run_id != self._run:  # a later model call: earlier calls nothing ran are moot
            self._run, self._chunks, self._pending = run_id, {}, []

    def _collect(self, event: Event) -> None:
        calls = getattr(event.chunk, "tool_call_chunks", None)
        if not calls:
            return
        self._new_run(event.run_id)
        for c in calls:
            key = c.get("index")
            if key is None:  # no index: a new call if it has an id, else the last one goes on
                key = len(self._chunks) if c.get("id") or not self._chunks else len(self._chunks) - 1
            call = self._chunks.get(key)
            if call is None:
                call = self._chunks[key] = _Call("", "", "")
                self._pending.append(call)
            call.id = call.id or c.get("id") or ""
            call.name += c.get("name") or ""
            call.arguments += c.get("args") or ""
        for key, call in self._chunks.items():
            call.id = call.id or f"call_{event.run_id}_{key}"

    def _ended(self, event: Event) -> None:
        """A model call that streamed no tool-call chunks may still have made calls."""
        message = event.data.get("output")
        if event.run_id == self._run and self._chunks:
            return
        calls = getattr(message, "tool_calls", None)
        if calls:
            self._new_run(event.run_id)
            for i, c in enumerate(calls):
                args = json.dumps(c.get("args") or {})
                self._pending.append(_Call(c.get("id") or f"call_{event.run_id}_{i}", c.get("name") or "", args))

    def _executed(self, event: Event) -> dict[str, Any]:
        """The wire form of a tool call the stream runs, matched to the model's request."""
        args = event.data.get("input")
        named = [c for c in self._pending if not c.executed and c.name == event.name]
        same = [c for c in named if _parsed(c.arguments) == args]
        found = (same or named)[0] if named else None
        if found is None:
            text = args if isinstance(args, str) else json.dumps(safe(args), ensure_ascii=False)
            found = _Call("call_" + event.run_id, event.name, text)
        found.executed = True
        self._running[event.run_id] = found.id
        wire = found.wire(0)
        del wire["index"]
        return wire

    def finish(self, usage: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The last chunks: calls for the client to run, `finish_reason`, then usage if asked."""
        out = self._deltas()
        if self.interrupt is not None:  # paused: the graph runs its pending calls on resume
            last = self._chunk({}, "interrupt")
            last["choices"][0]["interrupt"] = self.interrupt
            out.append(last)
        else:
            waiting = [c for c in self._pending if not c.executed] if self.tool_calls else []
            if waiting:
                out.append(self._chunk({"tool_calls": [c.wire(i) for i, c in enumerate(waiting)]}))
            out.append(self._chunk({}, "tool_calls" if waiting else "stop"))
        if self.include_usage:
            out.append({**self._chunk({}), "choices": [], "usage": openai_usage(usage)})
        return out


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return None


def _content(output: Any) -> Any:
    content = getattr(output, "content", output)
    return safe(content)


def _chunk_object(data: dict[str, Any]) -> ChatCompletionChunk:
    """A `ChatCompletionChunk` from a chunk dict, as the SDK builds it from the wire:
    validated, except a final `"interrupt"` chunk, which the SDK's own parser keeps
    as it is (its `finish_reason` is not one of OpenAI's)."""
    from openai.types.chat import ChatCompletionChunk

    choices = data["choices"]  # empty in the usage chunk
    if choices and choices[0].get("finish_reason") == "interrupt":
        return ChatCompletionChunk.construct(**data)
    return ChatCompletionChunk.model_validate(data)


def _dicts(stream: Stream[Any], builder: _ChunkBuilder) -> Iterator[dict[str, Any]]:
    try:
        for item in items(stream, None):
            yield from builder.item(item)
        yield from builder.finish(stream.summary.usage)
    finally:
        stream.close()


async def _adicts(stream: AsyncStream[Any], builder: _ChunkBuilder) -> AsyncIterator[dict[str, Any]]:
    try:
        async for item in aitems(stream, None):
            for chunk in builder.item(item):
                yield chunk
        for chunk in builder.finish(stream.summary.usage):
            yield chunk
    finally:
        stream.close()


def chunks(
    stream: Stream[Any], *, model: str = "callstream", tool_calls: bool = False, include_usage: bool = False
) -> Iterator[ChatCompletionChunk]:
    """Yield `openai.types.chat.ChatCompletionChunk` objects, as `stream=True` does.

    Args:
        stream: from `iter_callbacks` or `from_callback`, entered or not.
        model: the `model` field of every chunk.
        tool_calls: show tool calls (see the module docstring): the ones the
            stream runs as `delta.executed_tool_calls`/`delta.tool_results`,
            the ones left for the caller as `delta.tool_calls`.
        include_usage: end with a chunk with empty `choices` and `usage`.
    """
    check(stream, Stream, "chunks")
    import openai.types.chat  # noqa: F401  (the extra is installed: fail here, not at the first chunk)

    builder = _ChunkBuilder(model, tool_calls=tool_calls, include_usage=include_usage)
    return (_chunk_object(d) for d in _dicts(stream, builder))


def achunks(
    stream: AsyncStream[Any], *, model: str = "callstream", tool_calls: bool = False, include_usage: bool = False
) -> AsyncIterator[ChatCompletionChunk]:
    """The async twin of `chunks`."""
    check(stream, AsyncStream, "achunks")
    import openai.types.chat  # noqa: F401

    builder = _ChunkBuilder(model, tool_calls=tool_calls, include_usage=include_usage)
    return (_chunk_object(d) async for d in _adicts(stream, builder))


def _wire(data: dict[str, Any]) -> bytes:
    return utf8("data: " + json_text(data) + "\n\n")


class _WireEncoder:
    """The OpenAI wire format as a web encoder (the `_web.Frames` interface)."""

    def __init__(self, builder: _ChunkBuilder, error_message: Callable[[BaseException], str]) -> None:
        self.builder = builder
        self.error_message = error_message

    def item(self, item: Any) -> bytes | None:
        if item is IDLE:
            return PING
        return b"".join(_wire(d) for d in self.builder.item(item)) or None

    def done(self, stream: Stream[Any] | AsyncStream[Any]) -> bytes:
        return b"".join(_wire(d) for d in self.builder.finish(stream.summary.usage)) + b"data: [DONE]\n\n"

    def error(self, exc: BaseException) -> bytes:
        logger.error("stream failed after the response started", exc_info=exc)
        message = self.error_message(exc)
        return _wire({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


def sse(
    stream: Stream[Any],
    *,
    model: str = "callstream",
    tool_calls: bool = False,
    include_usage: bool = False,
    heartbeat: float | None = 15.0,
    error_message: Callable[[BaseException], str] = default_error_message,
) -> Iterator[bytes]:
    """The OpenAI streaming wire format: `data: {chunk}` ... `data: [DONE]`.

    `tool_calls` and `include_usage` as for `chunks`; `heartbeat` and
    `error_message` as for `callstream.sse.sse`.
    """
    check(stream, Stream, "sse", heartbeat)
    builder = _ChunkBuilder(model, tool_calls=tool_calls, include_usage=include_usage)
    return encode(stream, _WireEncoder(builder, error_message), heartbeat)


def asse(
    stream: AsyncStream[Any],
    *,
    model: str = "callstream",
    tool_calls: bool = False,
    include_usage: bool = False,
    heartbeat: float | None = 15.0,
    error_message: Callable[[BaseException], str] = default_error_message,
) -> AsyncIterator[bytes]:
    """The async twin of `sse`."""
    check(stream, AsyncStream, "asse", heartbeat)
    builder = _ChunkBuilder(model, tool_calls=tool_calls, include_usage=include_usage)
    return aencode(stream, _WireEncoder(builder, error_message), heartbeat)


def chat_completion(text: str, *, model: str = "callstream", usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A non-streaming `chat.completion` response body for `text`.

    `usage` is what the model reported, in LangChain's keys (`input_tokens`,
    `output_tokens`, `total_tokens`: `stream.summary.usage`, a message's
    `usage_metadata`) or OpenAI's; zeros when None.
    """
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": openai_usage(usage),
    }
