"""OpenAI-shaped output, for code and clients written for the OpenAI SDK.

```python
for chunk in callstream.openai.chunks(callstream.iter_callbacks(chain, inputs)):
    print(chunk.choices[0].delta.content or "", end="")   # as with stream=True

# an endpoint any OpenAI client can consume unchanged
return StreamingHttpResponse(callstream.openai.sse(stream), headers=SSE_HEADERS)
```

Tokens become `choices[0].delta.content`; with `tool_calls=True`, tool-call
chunks become `delta.tool_calls`; the last chunk carries `finish_reason`
(`"tool_calls"` if any tool call was sent, else `"stop"`).

A LangGraph run that paused on `interrupt()` (human in the loop) ends with
`finish_reason: "interrupt"`, a value of ours beside OpenAI's, and its last
chunk's choice carries the pause as an extra field:
`choices[0].interrupt == {"interrupts": [{"id", "value", "node", "ns"}, ...],
"checkpoint_id"}` (the `interrupt` event's data). The OpenAI SDK keeps both:
`chunk.choices[0].finish_reason == "interrupt"`, and the payload in
`chunk.choices[0].model_extra["interrupt"]`. A client that knows neither sees
an ordinary end of message. The wire format is
`data: {...}` lines ending with `data: [DONE]`; an error after the headers is
sent as `data: {"error": {...}}`, which the OpenAI SDK raises as `APIError`.
`chunks()` needs the `openai` package (`pip install 'callstream[openai]'`);
the wire format does not.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._astream import AsyncStream
from ._core import IDLE
from ._stream import Stream
from .events import Event
from .sse import PING, _aencode, _check, _encode, _safe, default_error_message, logger

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

__all__ = ("achunks", "asse", "chat_completion", "chunks", "sse")


class ChunkBuilder:
    """Builds `chat.completion.chunk` dicts from stream items (sans-I/O)."""

    def __init__(self, model: str = "callstream", *, tool_calls: bool = False) -> None:
        self.model = model
        self.tool_calls = tool_calls
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.started = False
        self.sent_tool_call = False
        #: the data of the run's `interrupt` event (a LangGraph graph paused), or None
        self.interrupt: dict[str, Any] | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def item(self, item: Any) -> list[dict[str, Any]]:
        delta: dict[str, Any] = {}
        if type(item) is str:
            if item:
                delta["content"] = item
        elif isinstance(item, Event) and item.kind == "interrupt":
            self.interrupt = _safe(item.data)
        elif isinstance(item, Event) and item.kind == "token":
            if item.text:
                delta["content"] = item.text
            calls = getattr(item.chunk, "tool_call_chunks", None) if self.tool_calls else None
            if calls:
                delta["tool_calls"] = [_tool_call(c) for c in calls]
                self.sent_tool_call = True
        if not delta:
            return []
        out = []
        if not self.started:
            self.started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        out.append(self._chunk(delta))
        return out

    def finish(self) -> list[dict[str, Any]]:
        out = [] if self.started else [self._chunk({"role": "assistant", "content": ""})]
        self.started = True
        if self.interrupt is not None:
            last = self._chunk({}, "interrupt")
            last["choices"][0]["interrupt"] = self.interrupt
            out.append(last)
        else:
            out.append(self._chunk({}, "tool_calls" if self.sent_tool_call else "stop"))
        return out


def _chunk_object(data: dict[str, Any]) -> ChatCompletionChunk:
    """A `ChatCompletionChunk` from a chunk dict, as the SDK builds it from the wire:
    validated, except a final `"interrupt"` chunk, which the SDK's own parser keeps
    as it is (its `finish_reason` is not one of OpenAI's)."""
    from openai.types.chat import ChatCompletionChunk

    if data["choices"][0].get("finish_reason") == "interrupt":
        return ChatCompletionChunk.construct(**data)
    return ChatCompletionChunk.model_validate(data)


def _tool_call(chunk: dict[str, Any]) -> dict[str, Any]:
    call: dict[str, Any] = {"index": chunk.get("index") or 0}
    if chunk.get("id"):
        call["id"] = chunk["id"]
        call["type"] = "function"
    function = {}
    if chunk.get("name"):
        function["name"] = chunk["name"]
    if chunk.get("args"):
        function["arguments"] = chunk["args"]
    call["function"] = function
    return call


def _dicts(stream: Stream[Any], builder: ChunkBuilder) -> Iterator[dict[str, Any]]:
    try:
        for item in stream._items():
            yield from builder.item(item)
        yield from builder.finish()
    finally:
        stream.close()


async def _adicts(stream: AsyncStream[Any], builder: ChunkBuilder) -> AsyncIterator[dict[str, Any]]:
    try:
        async for item in stream._items():
            for chunk in builder.item(item):
                yield chunk
        for chunk in builder.finish():
            yield chunk
    finally:
        stream.close()


def chunks(
    stream: Stream[Any], *, model: str = "callstream", tool_calls: bool = False
) -> Iterator[ChatCompletionChunk]:
    """Yield `openai.types.chat.ChatCompletionChunk` objects, as `stream=True` does."""
    _check(stream, Stream, "chunks")
    import openai.types.chat  # noqa: F401  (the extra is installed: fail here, not at the first chunk)

    builder = ChunkBuilder(model, tool_calls=tool_calls)
    return (_chunk_object(d) for d in _dicts(stream, builder))


def achunks(
    stream: AsyncStream[Any], *, model: str = "callstream", tool_calls: bool = False
) -> AsyncIterator[ChatCompletionChunk]:
    """The async twin of `chunks`."""
    _check(stream, AsyncStream, "achunks")
    import openai.types.chat  # noqa: F401

    builder = ChunkBuilder(model, tool_calls=tool_calls)
    return (_chunk_object(d) async for d in _adicts(stream, builder))


def _wire(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


class WireEncoder:
    """The OpenAI wire format as a web encoder (see `callstream.sse.Encoder`)."""

    def __init__(self, builder: ChunkBuilder, error_message: Callable[[BaseException], str]) -> None:
        self.builder = builder
        self.error_message = error_message

    def item(self, item: Any) -> bytes | None:
        if item is IDLE:
            return PING
        return b"".join(_wire(d) for d in self.builder.item(item)) or None

    def done(self, stream: Stream[Any] | AsyncStream[Any]) -> bytes:
        return b"".join(_wire(d) for d in self.builder.finish()) + b"data: [DONE]\n\n"

    def error(self, exc: BaseException) -> bytes:
        logger.error("stream failed after the response started", exc_info=exc)
        return _wire({"error": {"message": self.error_message(exc), "type": "server_error", "code": None}})


def sse(
    stream: Stream[Any],
    *,
    model: str = "callstream",
    tool_calls: bool = False,
    heartbeat: float | None = 15.0,
    error_message: Callable[[BaseException], str] = default_error_message,
) -> Iterator[bytes]:
    """The OpenAI streaming wire format: `data: {chunk}` ... `data: [DONE]`."""
    _check(stream, Stream, "sse", heartbeat)
    return _encode(stream, WireEncoder(ChunkBuilder(model, tool_calls=tool_calls), error_message), heartbeat)


def asse(
    stream: AsyncStream[Any],
    *,
    model: str = "callstream",
    tool_calls: bool = False,
    heartbeat: float | None = 15.0,
    error_message: Callable[[BaseException], str] = default_error_message,
) -> AsyncIterator[bytes]:
    """The async twin of `sse`."""
    _check(stream, AsyncStream, "asse", heartbeat)
    return _aencode(stream, WireEncoder(ChunkBuilder(model, tool_calls=tool_calls), error_message), heartbeat)


def chat_completion(text: str, *, model: str = "callstream", usage: dict[str, int] | None = None) -> dict[str, Any]:
    """A non-streaming `chat.completion` response body for `text`."""
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
