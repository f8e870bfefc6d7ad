"""Haystack pipelines, chat generators and agents as streams of callstream `Event`s.

```python
from callstream.haystack import iter_run, aiter_run

with iter_run(pipeline, {"prompt": {"question": q}}, timeout=60) as stream:
    for event in stream:                       # token, tool_start, tool_end
        print(event.metadata["component"], event.text)
    stream.output                              # == pipeline.run(data)

for token in iter_run(agent, {"messages": [ChatMessage.from_user(q)]}).tokens():
    ...
```

Needs the `haystack` extra: `pip install "callstream[haystack]"` (the
`haystack-ai` package). This does for Haystack what `iter_callbacks` does for
LangChain runnables, on the same core: every sink, time limit and face, error
identity, cancellation, and the web encoders.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import FrameType, MappingProxyType
from typing import Any

try:
    from haystack.core.pipeline.base import PipelineBase
    from haystack.dataclasses import StreamingChunk, ToolCallResult
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "callstream.haystack needs Haystack: pip install 'callstream[haystack]' (the haystack-ai package)"
    ) from exc

from ._astream import AsyncStream
from ._core import Timeouts, _Core
from ._handler import Filter
from ._stream import Stream
from ._summary import StreamStats
from ._worker import Emit
from .errors import Cancelled
from .events import Event
from .sinks import Sink, SinkName, make_sink, never_blocks

__all__ = ("aiter_run", "iter_run")

Callback = Callable[[StreamingChunk], Any]

#: How many frames above a streaming callback are searched for the HTTP
#: response to close when the stream is cancelled.
_FRAMES_SEARCHED = 8


class _Translator:
    """Haystack `StreamingChunk`s → callstream `Event`s (sans-I/O; one per stream).

    Each streaming component gets its own callback, so every event names the
    component it came from (`metadata["component"]`), whatever the chunk says.
    A model's tool call is reported once its arguments are complete (at the
    reply's end), a tool's result when the agent streams it.
    """

    def __init__(self, filter: Filter | None, stats: StreamStats) -> None:
        self.filter = filter
        self.stats = stats
        self.emit_token: Emit = _unbound
        self.emit_event: Emit = _unbound
        self._replies: dict[str, str] = {}  # component -> run id of the reply under way
        self._last_reply: dict[str, str] = {}
        self._calls: dict[str, dict[int, list[Any]]] = {}  # component -> index -> [id, name, argument parts]
        self._started: dict[str, str] = {}  # tool call id -> run id of its tool_start
        self._started_by_name: dict[tuple[str, str], list[str]] = {}  # calls without an id, oldest first
        self._metadata: dict[str, Mapping[str, Any]] = {}  # component -> its events' metadata (shared, read-only)

    def wants(self, component: str) -> bool:
        f = self.filter
        return f is None or f.admits(component, "chat_model", ()) or f.admits(component, "tool", ())

    def chunk(self, component: str, chunk: StreamingChunk) -> None:
        metadata = self._metadata.get(component)
        if metadata is None:
            metadata = self._metadata[component] = MappingProxyType({"component": component})
        result = chunk.tool_call_result
        if result is not None:
            self._flush(component, metadata)
            self._tool_end(component, result, metadata)
            return
        if chunk.finish_reason == "tool_call_results" and not chunk.content:
            return  # the agent's marker after its tool results, not a model's output
        run_id = self._reply(component, chunk)
        if chunk.tool_calls:
            calls = self._calls.setdefault(component, {})
            for delta in chunk.tool_calls:
                call = calls.get(delta.index)
                if call is None:
                    call = calls[delta.index] = [None, None, []]
                if delta.id and not call[0]:
                    call[0] = delta.id
                if delta.tool_name and not call[1]:
                    call[1] = delta.tool_name
                if delta.arguments:
                    call[2].append(delta.arguments)
        self.stats.on_token()
        usage = chunk.meta.get("usage") if chunk.meta else None
        if usage and isinstance(usage, Mapping):
            self._usage(usage)
        if self.filter is None or self.filter.admits(component, "chat_model", ()):
            self.emit_token(
                Event(
                    "token", component, run_id, (), (), metadata, {"chunk": chunk}, chunk.content, chunk, "chat_model"
                )
            )
        if chunk.finish_reason is not None:
            self._flush(component, metadata)
            self._replies.pop(component, None)

    def _reply(self, component: str, chunk: StreamingChunk) -> str:
        run_id = self._replies.get(component)
        if run_id is not None:
            return run_id
        last = self._last_reply.get(component)
        usage_only = not chunk.content and not chunk.tool_calls and chunk.index is None and "usage" in chunk.meta
        if usage_only and last is not None:  # the usage chunk after a reply's end (OpenAI's include_usage)
            return last
        run_id = self._replies[component] = self._last_reply[component] = str(uuid.uuid4())
        self.stats.llm_calls += 1
        return run_id

    def _usage(self, usage: Mapping[str, Any]) -> None:
        keys = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens", "total_tokens": "total_tokens"}
        found = {ours: usage[theirs] for ours, theirs in keys.items() if isinstance(usage.get(theirs), int)}
        if found:
            self.stats.on_llm_end(_Usage(found))

    def _flush(self, component: str, metadata: Mapping[str, Any]) -> None:
        """Report the tool calls of the component's reply, now that their arguments are complete."""
        calls = self._calls.pop(component, None)
        if not calls:
            return
        for index in sorted(calls):
            call_id, name, parts = calls[index]
            raw = "".join(parts)
            try:
                args: Any = json.loads(raw) if raw else {}
            except ValueError:
                args = raw  # what the model sent, unparsed
            self._tool_start(component, call_id, name or "", args, metadata)

    def _tool_start(
        self, component: str, call_id: str | None, name: str, args: Any, metadata: Mapping[str, Any]
    ) -> str:
        run_id = call_id or str(uuid.uuid4())
        if call_id:
            self._started[call_id] = run_id
        else:
            self._started_by_name.setdefault((component, name), []).append(run_id)
        self.stats.on_tool_start(run_id, name, args)
        if self.filter is None or self.filter.admits(component, "tool", ()):
            self.emit_event(Event("tool_start", name, run_id, (), (), metadata, {"input": args}, "", None, "tool"))
        return run_id

    def _tool_end(self, component: str, result: ToolCallResult, metadata: Mapping[str, Any]) -> None:
        origin = result.origin
        run_id = self._started.pop(origin.id, None) if origin.id else None
        if run_id is None and not origin.id:
            waiting = self._started_by_name.get((component, origin.tool_name))
            run_id = waiting.pop(0) if waiting else None
        if run_id is None:  # its call was not streamed (a generator without streamed tool calls)
            run_id = self._tool_start(component, origin.id, origin.tool_name, origin.arguments, metadata)
            self._started.pop(origin.id or "", None)
            waiting = self._started_by_name.get((component, origin.tool_name))
            if waiting and waiting[-1] == run_id:
                waiting.pop()
        self.stats.on_tool_end(run_id, result=result.result)
        if self.filter is None or self.filter.admits(component, "tool", ()):
            data: dict[str, Any] = {"output": result.result}
            if result.error:
                data["failed"] = True
            self.emit_event(Event("tool_end", origin.tool_name, run_id, (), (), metadata, data, "", None, "tool"))


class _Usage:
    """What `StreamStats.on_llm_end` reads: LangChain's `usage_metadata` shape."""

    __slots__ = ("usage_metadata",)

    def __init__(self, usage: dict[str, int]) -> None:
        self.usage_metadata = usage


def _unbound(item: Any) -> None:  # pragma: no cover - replaced before the run starts
    raise RuntimeError("the translator is not bound to a stream")


# -- closing the HTTP response of a cancelled generator ----------------------------------


def _is_response(value: Any) -> bool:
    """An HTTP response of httpx or a fork of it (openai ships `httpx2`): duck-typed."""
    kind = type(value)
    return all(callable(getattr(kind, name, None)) for name in ("close", "aclose", "iter_bytes", "aiter_bytes"))


def _responses(frame: FrameType | None) -> list[Any]:
    """HTTP responses held by the frames above a streaming callback.

    A generator iterates its SDK's stream (`for chunk in completion:`) and calls
    the callback per chunk. When the callback raises to stop it, the SDK's
    stream is left suspended with its response open, and the stream sits in a
    reference cycle: the connection stays open until a garbage collection. The
    response is in the generator's locals, directly or as the SDK stream's
    `response` attribute (openai, anthropic and other httpx-based SDKs).
    """
    found: list[Any] = []
    depth = _FRAMES_SEARCHED
    while frame is not None and depth:
        for value in list(frame.f_locals.values()):
            candidate = value
            if not _is_response(candidate):
                attrs = getattr(value, "__dict__", None)  # instance attributes only: no property runs
                candidate = attrs.get("response") if isinstance(attrs, dict) else None
                if candidate is None or not _is_response(candidate):
                    continue
            if all(candidate is not seen for seen in found):
                found.append(candidate)
        frame = frame.f_back
        depth -= 1
    return found


def _close_responses(frame: FrameType | None) -> None:
    for response in _responses(frame):
        try:
            response.close()  # an async response refuses (RuntimeError): its own loop closes it
        except Exception:  # best effort: the run is being stopped anyway
            continue


async def _aclose_responses(frame: FrameType | None) -> None:
    for response in _responses(frame):
        try:
            await response.aclose()
        except RuntimeError:  # a sync response (a sync client used on the loop)
            try:
                response.close()
            except Exception:
                continue
        except Exception:
            continue


def _sync_callback(translator: _Translator, component: str, user: Callback | None) -> Callback:
    translate = translator.chunk

    # A plain function: Haystack deep-copies component inputs, and a bound
    # method or a callable object would be copied with its state.
    def streaming_callback(chunk: StreamingChunk) -> None:
        if user is not None:
            user(chunk)
        try:
            translate(component, chunk)
        except Cancelled:
            _close_responses(sys._getframe(1))
            raise

    return streaming_callback


def _async_callback(translator: _Translator, component: str, user: Callback | None) -> Callback:
    translate = translator.chunk

    async def streaming_callback(chunk: StreamingChunk) -> None:
        if user is not None:
            result = user(chunk)
            if inspect.isawaitable(result):
                await result
        try:
            translate(component, chunk)
        except Cancelled:
            await _aclose_responses(sys._getframe(1))
            # What Haystack's async generators handle as a stop: they close
            # their stream (as on a task cancellation) and unwind.
            raise asyncio.CancelledError from None

    return streaming_callback


# -- targets -------------------------------------------------------------------------------


def _streaming_components(pipeline: PipelineBase) -> list[str]:
    """The components of `pipeline` that take a `streaming_callback` input from outside."""
    return sorted(name for name, sockets in pipeline.inputs().items() if "streaming_callback" in sockets)


def _takes_streaming_callback(target: Any) -> bool:
    run = getattr(target, "run", None)
    if not callable(run):
        return False
    try:
        return "streaming_callback" in inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False


def _user_callback(given: Any, component: Any, name: str, *, sync: bool) -> Callback | None:
    """The user's own callback for a component: the one in the run's data, else its init one."""
    user = given if given is not None else getattr(component, "streaming_callback", None)
    if user is None:
        return None
    if not callable(user):
        raise TypeError(f"the streaming_callback of {name!r} must be callable, not {type(user).__name__}")
    if sync and inspect.iscoroutinefunction(user):
        raise TypeError(
            f"the streaming_callback of {name!r} is a coroutine function: a synchronous run cannot await it; "
            "use aiter_run, or a plain function"
        )
    return user  # type: ignore[no-any-return]


class _Run:
    """One run of a target: how to call it with our callbacks, sync or async."""

    def __init__(self, target: Any, data: Mapping[str, Any], translator: _Translator) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict (the run's inputs), not {type(data).__name__}")
        self.target = target
        self.translator = translator
        if isinstance(target, PipelineBase):
            self.pipeline: PipelineBase | None = target
            # Flat inputs ({"question": q}) become per-component ones, as run() does.
            prepare = getattr(target, "_prepare_component_input_data", None)
            nested = prepare(dict(data)) if prepare is not None else dict(data)
            self.data: dict[str, Any] = {name: dict(values) for name, values in nested.items()}
            self.components = [name for name in _streaming_components(target) if translator.wants(name)]
            for name in self.components:
                given = self.data.get(name, {}).get("streaming_callback")
                _user_callback(given, target.get_component(name), name, sync=False)
        elif _takes_streaming_callback(target):
            self.pipeline = None
            self.data = dict(data)
            self.name: str = getattr(target, "__component_name__", None) or type(target).__name__
            _user_callback(self.data.get("streaming_callback"), target, self.name, sync=False)
        else:
            raise TypeError(
                "target must be a Haystack Pipeline (or AsyncPipeline), or a component whose run() takes "
                f"streaming_callback (a chat generator, an Agent), not {type(target).__name__}"
            )

    @property
    def has_async(self) -> bool:
        return callable(getattr(self.target, "run_async", None))

    def check_sync(self) -> None:
        """Raise at the call if a user callback cannot run in a synchronous run."""
        if self.pipeline is None:
            _user_callback(self.data.get("streaming_callback"), self.target, self.name, sync=True)
            return
        for name in self.components:
            given = self.data.get(name, {}).get("streaming_callback")
            _user_callback(given, self.pipeline.get_component(name), name, sync=True)

    def _wired(self, make: Callable[[_Translator, str, Callback | None], Callback], *, on_loop: bool) -> dict[str, Any]:
        translator = self.translator
        if self.pipeline is None:
            data = dict(self.data)
            if translator.wants(self.name):
                user = _user_callback(data.get("streaming_callback"), self.target, self.name, sync=False)
                data["streaming_callback"] = make(translator, self.name, user)
            return data
        data = {name: dict(values) for name, values in self.data.items()}
        for name in self.components:
            component = self.pipeline.get_component(name)
            inputs = data.setdefault(name, {})
            user = _user_callback(inputs.get("streaming_callback"), component, name, sync=False)
            # In run_async, a component without run_async runs in a worker thread: it needs a plain callback.
            native = on_loop and getattr(component, "__haystack_supports_async__", False)
            inputs["streaming_callback"] = (make if native or not on_loop else _sync_callback)(translator, name, user)
        return data

    def run(self) -> Any:
        data = self._wired(_sync_callback, on_loop=False)
        if self.pipeline is None:
            return self.target.run(**data)
        return self.pipeline.run(data)  # type: ignore[attr-defined]

    async def run_async(self) -> Any:
        data = self._wired(_async_callback, on_loop=True)
        result: Awaitable[Any]
        if self.pipeline is None:
            result = self.target.run_async(**data)
        else:
            result = self.pipeline.run_async(data)  # type: ignore[attr-defined]
        return await result


def _make_core(
    target: Any,
    data: Mapping[str, Any],
    *,
    sink: SinkName | Sink,
    timeout: float | None,
    first_token_timeout: float | None,
    idle_timeout: float | None,
    on_loop: bool,
    **filters: Sequence[str] | None,
) -> _Core[Any]:
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    stats = StreamStats()
    translator = _Translator(Filter.of(**filters), stats)
    run = _Run(target, data, translator)
    sink_ = make_sink(sink)
    # The async face runs run_async as a task on the caller's loop when the
    # sink never blocks; otherwise run() in a worker thread, so that
    # backpressure never blocks the loop (as aiter_callbacks does).
    use_task = on_loop and run.has_async and never_blocks(sink_)
    if not use_task:
        run.check_sync()

    def produce(emit: Emit) -> Any:
        return run.run()

    async def aproduce(emit: Emit) -> Any:
        return await run.run_async()

    core: _Core[Any] = _Core(produce, sink_, timeouts, aproducer=aproduce if use_task else None)
    core.stats = translator.stats = stats
    translator.emit_token = core.make_emit(token=True)
    translator.emit_event = core.make_emit(token=False)
    return core


def iter_run(
    target: Any,
    data: Mapping[str, Any],
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    include_names: Sequence[str] | None = None,
    include_types: Sequence[str] | None = None,
    include_tags: Sequence[str] | None = None,
    exclude_names: Sequence[str] | None = None,
    exclude_types: Sequence[str] | None = None,
    exclude_tags: Sequence[str] | None = None,
) -> Stream[Event]:
    """Stream a Haystack pipeline, chat generator or agent run as `Event`s, synchronously.

    The run happens in a worker thread of its own with your `contextvars`:
    `pipeline.run(data)` for a `Pipeline`, `component.run(**data)` for a
    component whose `run` takes `streaming_callback` (chat generators,
    `Agent`). Every streaming component of a pipeline gets a callback of its
    own, so each event says which component it came from.

    Events, in the order the run produced them:

    - `token` for each chunk a model streams: `event.text` its text (empty
      for a tool-call or closing chunk; `tokens()` skips those), `event.chunk`
      the `StreamingChunk`, `event.name` the component;
    - `tool_start` once a tool call's arguments are complete: `event.name`
      the tool, `event.data["input"]` its arguments (parsed JSON);
    - `tool_end` when an agent streams the tool's result:
      `event.data["output"]`, and `"failed": True` if the tool failed.

    Each carries `metadata["component"]`, the component's name in the
    pipeline (for a component run on its own: its class name). Token events
    of one model reply share a `run_id`; a tool call's two events share
    theirs. `stream.output` is what `run` returns. Your own
    `streaming_callback` (in `data`, or given to the component) is still
    called, before callstream sees the chunk.

    Leaving the `with` block, `close()`, a time limit or garbage collection
    stop the run at the next chunk and close the model's HTTP response (so
    the provider stops generating). An exception raised by the run is
    re-raised in the consumer, as the same object, after the events before it.

    Args:
        target: a `Pipeline` (or `AsyncPipeline`), or a component.
        data: the run's inputs: for a pipeline, per component
            (`{"prompt": {"question": q}}`) or flat (`{"question": q}`); for
            a component, its `run` keyword arguments.
        sink: `"queue"` (default), `"deque"`, `"bounded"`, or a `Sink`.
        timeout: seconds for the whole run.
        first_token_timeout: seconds until the first token event (a tool-call
            chunk counts).
        idle_timeout: seconds allowed between two events.
        include_names: only these components (names match components).
        include_types: only these event types: `"chat_model"` (tokens) and
            `"tool"` (tool events).
        include_tags: Haystack components have no tags: matches none.
        exclude_names: never these components; a component that can emit no
            event is not given callstream's callback at all.
        exclude_types: never these event types.
        exclude_tags: matches none.

    Raises:
        TypeError: `target` is neither a pipeline nor a component taking
            `streaming_callback`, `data` is not a dict, a user callback is a
            coroutine function (use `aiter_run`), `sink` is neither a name nor
            a `Sink`, or a filter is not a list of strings.
        ValueError: an unknown sink name, or a timeout that is not a positive
            number.
    """
    core = _make_core(
        target,
        data,
        sink=sink,
        timeout=timeout,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        on_loop=False,
        include_names=include_names,
        include_types=include_types,
        include_tags=include_tags,
        exclude_names=exclude_names,
        exclude_types=exclude_types,
        exclude_tags=exclude_tags,
    )
    return Stream(core)


def aiter_run(
    target: Any,
    data: Mapping[str, Any],
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    include_names: Sequence[str] | None = None,
    include_types: Sequence[str] | None = None,
    include_tags: Sequence[str] | None = None,
    exclude_names: Sequence[str] | None = None,
    exclude_types: Sequence[str] | None = None,
    exclude_tags: Sequence[str] | None = None,
) -> AsyncStream[Event]:
    """The async twin of `iter_run`: same arguments, same events, same guarantees.

    ```python
    async with aiter_run(pipeline, {"prompt": {"question": q}}) as stream:
        async for event in stream:
            ...
    ```

    When the sink never blocks (`"queue"`, `"deque"`, or a `BoundedSink` with
    a `drop_*` or `"error"` policy), the run is `run_async` as a task on your
    event loop, with no thread: cancelling (`aclose()`, leaving `async with`,
    a time limit, your task being cancelled) cancels that task, and Haystack's
    generators close their HTTP response. Components without `run_async`
    run in Haystack's worker threads and get a plain callback. With a sink
    that can block, the run is `run()` in a worker thread instead, so that
    backpressure never blocks the loop. User callbacks may be `async def`.
    """
    core = _make_core(
        target,
        data,
        sink=sink,
        timeout=timeout,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        on_loop=True,
        include_names=include_names,
        include_types=include_types,
        include_tags=include_tags,
        exclude_names=exclude_names,
        exclude_types=exclude_types,
        exclude_tags=exclude_tags,
    )
    return AsyncStream(core)
