"""`iter_callbacks` / `aiter_callbacks`: any LangChain runnable as a stream of events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.messages import BaseMessageChunk, message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig

from . import _langgraph
from ._astream import AsyncStream
from ._core import Timeouts, _Core
from ._handler import CallbackHandler, Filter, Put, handler_type
from ._stream import Stream
from ._worker import PullWorker
from .events import Event
from .sinks import Sink, SinkName, make_sink, never_blocks

__all__ = ("aiter_callbacks", "iter_callbacks")


def _with_handler(config: RunnableConfig | None, handler: CallbackHandler, *, graphs: bool = True) -> RunnableConfig:
    """A copy of `config` with our handler added last (user handlers and
    tracers see every event first), and, with `graphs` once LangGraph is
    loaded, with graphs' `get_stream_writer()` routed to it; nothing the caller
    passed is mutated."""
    merged: dict[str, Any] = dict(config or {})
    callbacks = merged.get("callbacks")
    if callbacks is None:
        merged["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        merged["callbacks"] = [*callbacks, handler]
    else:  # a callback manager
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        merged["callbacks"] = manager
    if not graphs:
        return merged  # type: ignore[return-value]
    return _langgraph.with_stream_writer(merged, handler.on_stream_write)  # type: ignore[return-value]


_NO_KWARGS: dict[str, Any] = {}  # never written to


def _is_legacy_chain(runnable: Runnable[Any, Any]) -> bool:
    # langchain-classic `Chain`s (AgentExecutor included): `invoke` returns
    # inputs + outputs, which `stream()` does not reproduce; their inner models
    # stream anyway, because our handler is a streaming handler.
    return hasattr(runnable, "prep_outputs") and hasattr(runnable, "_call")


def _aggregate(chunks: list[Any]) -> Any:
    """What `Runnable.transform` does with output chunks: add them up."""
    if not chunks:
        return None
    total = chunks[0]
    for chunk in chunks[1:]:
        try:
            total = total + chunk
        except TypeError:
            total = chunk
    return total


def _output(handler: CallbackHandler, chunks: list[Any]) -> Any:
    """What invoke returns: the root run's end value, or the chunks added up;
    for a LangGraph graph that paused, its values with `"__interrupt__"`."""
    output = handler.root_output if handler.has_root_output else _aggregate(chunks)
    if isinstance(output, BaseMessageChunk):
        output = message_chunk_to_message(output)
    if handler.root_interrupts is not None:
        output = _langgraph.invoke_output(output, handler.root_interrupts)
    return output


def _make_core(
    runnable: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None,
    *,
    sink: SinkName | Sink,
    timeout: float | None,
    first_token_timeout: float | None,
    idle_timeout: float | None,
    on_loop: bool = False,
    **filters: Sequence[str] | None,
) -> _Core[Any]:
    if not isinstance(runnable, Runnable):
        raise TypeError(
            f"runnable must be a LangChain Runnable (a model, chain, agent or graph), not {type(runnable).__name__}; "
            "use callstream.from_callback for other callback APIs"
        )
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a RunnableConfig dict or None, not {type(config).__name__}")
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    filter_ = Filter.of(**filters)
    model = _is_model(runnable)
    run = _Run(runnable, input, config, model=model)
    # The consumer steps a model's stream()/astream() itself (see PullWorker). In a
    # thread, only without time limits: nothing could interrupt a blocked read there.
    pull = model and (on_loop or timeouts is None)
    if sink == "queue" and (pull or on_loop):
        # Every put then comes from the consumer's own thread or loop: an unbounded
        # deque is the same FIFO without queue.Queue's locks and conditions.
        sink = "deque"
    sink_ = make_sink(sink)
    worker = None
    if pull and never_blocks(sink_):
        worker = PullWorker(run, is_async=on_loop)
    core: _Core[Any] = _Core(
        run.produce,
        sink_,
        timeouts,
        aproducer=run.aproduce if on_loop and never_blocks(sink_) else None,
        worker=worker,
    )
    run.attach(core, filter_)
    return core


def _is_model(runnable: Runnable[Any, Any]) -> bool:
    """A chat model or LLM, bare or bound (`bind_tools`, `with_config`): its
    `stream()` yields a chunk after each token callback, so it can be pulled,
    and its end callback carries its output, so the chunks need not be kept."""
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return isinstance(runnable, (BaseChatModel, BaseLLM))


class _Run:
    """One run of a runnable, as the core's producer.

    The callback handler emits through the core, which needs the producer to
    be built: the core is made with `produce`/`aproduce`, then `attach`ed.
    """

    __slots__ = ("config", "core", "handler", "input", "kwargs", "model", "runnable")

    def __init__(
        self, runnable: Runnable[Any, Any], input: Any, config: RunnableConfig | None, *, model: bool = False
    ) -> None:
        self.runnable = runnable
        self.input = input
        self.config = config
        self.model = model  # a language model: no graph inside, no stream kwargs, no stream writer
        self.kwargs = _NO_KWARGS if model else _langgraph.stream_kwargs(runnable)
        self.core: _Core[Any] | None = None
        self.handler: CallbackHandler | None = None

    def attach(self, core: _Core[Any], filter_: Filter | None) -> None:
        """Give the run its core, and a callback handler that emits into it."""
        self.core = core
        if core.timeouts is None:  # the sink's own put for every event: nothing more per stream
            tokens: Sink | Put = core.sink
            events: Sink | Put = core.sink
        else:  # the deadlines checked before each item (see `_Core.make_emit`)
            tokens, events = Put(core.make_emit(token=True)), Put(core.make_emit(token=False))
        self.handler = handler_type()(tokens, events, filter_, core, core.stats)

    def _attached(self) -> tuple[_Core[Any], CallbackHandler, RunnableConfig]:
        assert self.core is not None and self.handler is not None, "attach() first"
        return self.core, self.handler, _with_handler(self.config, self.handler, graphs=not self.model)

    # Pulled by the consumer (a model): its chunks, then its output (its end callback's).

    def open(self) -> Iterator[Any]:
        _, _, run_config = self._attached()
        return self.runnable.stream(self.input, run_config)

    def aopen(self) -> AsyncIterator[Any]:
        _, _, run_config = self._attached()
        return self.runnable.astream(self.input, run_config)

    def finish(self) -> Any:
        core, handler = self.core, self.handler
        assert core is not None and handler is not None
        output = _output(handler, [])  # the end callback's output (see `_is_model`)
        core.interrupted = handler.interrupted
        return output

    def produce(self, emit: Any) -> Any:
        core, handler, run_config = self._attached()
        if _is_legacy_chain(self.runnable):
            return self.runnable.invoke(self.input, run_config)
        # Driven by stream(), as astream_events drives astream(): an LLM inside
        # a chain then streams token by token. The output is the root run's
        # end value (what invoke returns), or the chunks added up.
        output = _output(handler, list(self.runnable.stream(self.input, run_config, **self.kwargs)))
        core.interrupted = handler.interrupted
        return output

    async def aproduce(self, emit: Any) -> Any:
        core, handler, run_config = self._attached()
        if _is_legacy_chain(self.runnable):
            return await self.runnable.ainvoke(self.input, run_config)
        chunks = [chunk async for chunk in self.runnable.astream(self.input, run_config, **self.kwargs)]
        output = _output(handler, chunks)
        core.interrupted = handler.interrupted
        return output


def iter_callbacks(
    runnable: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
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
    """Stream a LangChain runnable's callbacks as `Event`s, synchronously.

    Works on any LLM, chat model, LCEL chain, legacy chain, `AgentExecutor`
    or LangGraph graph. The runnable runs in a worker thread of its own with
    the caller's `contextvars`; chat models stream even without
    `streaming=True`. A language model alone (bare or bound), with a sink that
    never blocks and no time limit, needs no thread: the consumer steps its
    `stream()` itself, as `for chunk in model.stream()` would. Events arrive in callback order; `stream.output` is what
    `runnable.invoke(input, config)` returns; `stream.tokens()` yields the
    token text (tool-call chunks, which carry no text, are skipped).

    ```python
    with callstream.iter_callbacks(chain, {"topic": "otters"}, timeout=60) as stream:
        for event in stream:
            if event.kind == "token":
                print(event.text, end="", flush=True)
    print(stream.output)

    for token in callstream.iter_callbacks(model, "hi").tokens():  # no `with` needed
        ...
    ```

    Leaving the `with` block, `close()`, a timeout or garbage collection stop
    the run at its next callback (an HTTP model's response is closed, as
    `model.stream()` does on `break`). An exception raised by the run is
    re-raised in the consumer, as the same object, after the events before it.

    Args:
        runnable: the model, chain, agent or graph.
        input: its input.
        config: a `RunnableConfig`; its callbacks, tags and metadata are kept.
        sink: `"queue"` (default), `"deque"`, `"bounded"`, or a `Sink`.
        timeout: seconds for the whole run.
        first_token_timeout: seconds until the first token event (any token
            event counts, a tool-call chunk included; start events do not).
        idle_timeout: seconds allowed between two events.
        include_names: only runs with these names (the `astream_events` filters).
        include_types: only runs of these types (`"chat_model"`, `"llm"`,
            `"chain"`, `"tool"`, `"retriever"`, `"prompt"`, `"parser"`).
        include_tags: only runs with one of these tags.
        exclude_names: never runs with these names (excludes win).
        exclude_types: never runs of these types.
        exclude_tags: never runs with one of these tags.

    Raises:
        TypeError: `runnable` is not a `Runnable`, `sink` is neither a name nor
            a `Sink`, or a filter is not a list of strings.
        ValueError: an unknown sink name, or a timeout that is not a positive
            number.
    """
    core = _make_core(
        runnable,
        input,
        config,
        sink=sink,
        timeout=timeout,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        include_names=include_names,
        include_types=include_types,
        include_tags=include_tags,
        exclude_names=exclude_names,
        exclude_types=exclude_types,
        exclude_tags=exclude_tags,
    )
    return Stream(core)


def aiter_callbacks(
    runnable: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
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
    """The async twin of `iter_callbacks`: same arguments, same guarantees.

    ```python
    async with callstream.aiter_callbacks(agent, {"messages": [...]}) as stream:
        async for event in stream:
            ...
    ```

    The run is driven by `runnable.astream()` as a task on the running event
    loop, with no thread, when the sink never blocks (`"queue"`, `"deque"`, or
    a `BoundedSink` with a `drop_*` or `"error"` policy): this scales to
    thousands of concurrent streams, and async-only components (a
    coroutine-only tool) work. A language model alone (bare or bound) needs
    not even a task: the consumer steps its `astream()` in its own task, as
    `async for chunk in model.astream()` would; cancelling the task that
    awaits the next event then stops the model, as it stops `astream()`. With a sink that can block (`"bounded"`,
    `"block"`/`"coalesce"` policies, or a custom `Sink`), the run is driven by
    `runnable.stream()` in a worker thread of its own instead, so that
    backpressure never blocks the event loop. Cancellation (`aclose()`,
    leaving `async with`, a timeout, the task being cancelled) cancels the
    producer task, which closes a chat model's HTTP response.
    """
    core = _make_core(
        runnable,
        input,
        config,
        sink=sink,
        timeout=timeout,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        include_names=include_names,
        include_types=include_types,
        include_tags=include_tags,
        exclude_names=exclude_names,
        exclude_types=exclude_types,
        exclude_tags=exclude_tags,
        on_loop=True,
    )
    return AsyncStream(core)
