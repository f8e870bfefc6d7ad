"""LangChain callbacks → `Event`s, emitted into the stream's sink."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_core.runnables.config import var_child_runnable_config

from . import _langgraph
from ._summary import StreamStats
from ._worker import Emit
from .events import _EMPTY, Event, EventKind


class Filter(NamedTuple):
    """The `astream_events` filters: include_* widen nothing by default,
    exclude_* always win."""

    include_names: frozenset[str] | None = None
    include_types: frozenset[str] | None = None
    include_tags: frozenset[str] | None = None
    exclude_names: frozenset[str] | None = None
    exclude_types: frozenset[str] | None = None
    exclude_tags: frozenset[str] | None = None

    @classmethod
    def of(cls, **given: Sequence[str] | None) -> Filter | None:
        if list(given.values()).count(None) == len(given):  # no filter: the common case, per stream
            return None
        values: dict[str, frozenset[str] | None] = {}
        for key, value in given.items():
            if value is None:
                values[key] = None
                continue
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{key} must be a list of strings, not {value!r}")
            values[key] = frozenset(value)
        if all(v is None for v in values.values()):
            return None
        return cls(**values)

    def admits(self, name: str, run_type: str, tags: Sequence[str]) -> bool:
        include = True
        if self.include_names is not None or self.include_types is not None or self.include_tags is not None:
            include = (
                (self.include_names is not None and name in self.include_names)
                or (self.include_types is not None and run_type in self.include_types)
                or (self.include_tags is not None and any(t in self.include_tags for t in tags))
            )
        if self.exclude_names is not None and name in self.exclude_names:
            return False
        if self.exclude_types is not None and run_type in self.exclude_types:
            return False
        if self.exclude_tags is not None and any(t in self.exclude_tags for t in tags):
            return False
        return include


class _Run(NamedTuple):
    #: always "token": a token Event's first six fields are its run's first six (`run[:6]`)
    kind: str
    name: str
    id: str
    parents: tuple[str, ...]
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    run_type: str
    visible: bool
    #: its tokens are shown: visible, and not tagged "nostream" (LangGraph's convention)
    tokens: bool = True


def _name(name: str | None, serialized: Mapping[str, Any] | None, default: str) -> str:
    if name:
        return name
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ident = serialized.get("id")
        if ident:
            return str(ident[-1])
    return default


def _content_text(content: Any) -> str:
    """Text of a message content: a str, or the text blocks of a list (#8051)."""
    if type(content) is str:
        return content
    parts: list[str] = []
    for block in content or ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _tools(kwargs: Mapping[str, Any]) -> dict[str, list[str]]:
    """`{"tools": [names]}` when the model call was given tools, else {}."""
    params = kwargs.get("invocation_params") or {}
    tools = params.get("tools") or params.get("functions") or []
    names = []
    for t in tools:
        fn = t.get("function", t) if isinstance(t, Mapping) else None
        names.append(str(fn.get("name", "")) if isinstance(fn, Mapping) else str(t))
    return {"tools": names} if names else {}


#: `Event(*fields)` without the keyword-default wrapper: a token's Event is built per token
_new_event = tuple.__new__

#: `CallbackHandler._raised_in` until an interrupt passes (never written to)
_NONE_RAISED: dict[str, Mapping[str, Any]] = {}


class _Out(Protocol):
    """Where the handler puts events: a sink, or a `Put` (an emit function with
    time limits)."""

    def put(self, item: Any) -> None: ...


class Put:
    """An emit function as an `_Out`."""

    __slots__ = ("put",)

    def __init__(self, put: Emit) -> None:
        self.put = put


class _Stops(Protocol):
    """What the handler asks of its stream (the core; attributes, not closures:
    one object fewer per stream): whether it is stopping, and whether its
    consumer reads the token text alone (see `_Core.texts_only`)."""

    @property
    def stopping(self) -> bool: ...

    @property
    def texts_only(self) -> bool: ...


class CallbackHandler(BaseCallbackHandler):
    """Turns every callback of a run into an `Event` and emits it.

    It implements LangChain's streaming-handler protocol (`tap_output_iter`),
    which is what makes a chat model stream inside `invoke` even without
    `streaming=True` — exactly as `astream_events` and LangGraph's `messages`
    mode do. It is added to the run's config; nothing shared is mutated.
    """

    run_inline = True  # keep callback order in async callback managers
    raise_error = True  # an error in here must never make a token vanish silently
    # LangChain reads it before each token callback: a class attribute, not the base's property
    ignore_llm = False

    def __init__(
        self,
        tokens: _Out,
        events: _Out,
        filter: Filter | None,
        stream: _Stops,
        stats: StreamStats | None = None,
    ) -> None:
        self.stats = stats if stats is not None else StreamStats()
        # where token events and the others go (`.put`): the sink itself when the
        # stream has no time limits (no bound method kept per stream)
        self._tokens = tokens
        self._events = events
        self._filter = filter
        self._stream = stream
        self._runs: dict[UUID, _Run] = {}
        self._last_id: UUID | None = None  # the run of the last token, and its record
        self._last_run: _Run | None = None
        self._root: UUID | None = None
        self.root_output: Any = None
        self.has_root_output = False
        #: LangGraph: the interrupts the root graph paused on (None: it did not pause)
        self.root_interrupts: tuple[Any, ...] | None = None
        #: LangGraph: some graph of the run paused on an interrupt
        self.interrupted = False
        # interrupt id -> metadata of the run that raised it (its node, its namespace)
        self._raised_in: dict[str, Mapping[str, Any]] = _NONE_RAISED  # a dict of its own once one is

    # -- the streaming-handler protocol: pass the output through untouched --

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output

    def tap_output_aiter(self, run_id: UUID, output: Any) -> Any:
        return output

    # -- bookkeeping -----------------------------------------------------------

    def _start(
        self,
        kind: EventKind,
        run_type: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        data: Mapping[str, Any],
    ) -> None:
        if self._root is None:
            self._root = run_id
        parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
        if parent is not None:
            parents = (*parent.parents, parent.id)
        else:
            parents = (str(parent_run_id),) if parent_run_id is not None else ()
        tags_ = tuple(tags or ())
        visible = self._filter is None or self._filter.admits(name, run_type, tags_)
        metadata_ = MappingProxyType(metadata or {})
        tokens = visible and "nostream" not in tags_
        run = _Run("token", name, str(run_id), parents, tags_, metadata_, run_type, visible, tokens)
        self._runs[run_id] = run
        if visible:
            self._events.put(Event(kind, run.name, run.id, parents, tags_, run.metadata, data, "", None, run_type))

    def _error(self, kind: EventKind, run_id: UUID, error: BaseException) -> None:
        """An error callback; LangGraph's control flow is not an error.

        A `GraphInterrupt` passes through every run between the node that
        called `interrupt()` and the graph that pauses: those runs end with no
        event (the graph's `interrupt` event says why). A `ParentCommand` (a
        hand-off to the parent graph) ends its runs normally, with the
        `Command` as their output.
        """
        flow = _langgraph.bubble_up(error)
        if flow is None:
            self._end(kind, run_id, {"error": error})
        elif flow == "command":
            command = error.args[0] if error.args else None
            self._end("tool_end" if kind == "tool_error" else "chain_end", run_id, {"output": command}, command)
        else:
            run = self._runs.pop(run_id, None)
            self._last_id = None
            if run is not None:
                for interrupt in _langgraph.interrupts_of(error):
                    ident = getattr(interrupt, "id", None)
                    if isinstance(ident, str):
                        if self._raised_in is _NONE_RAISED:
                            self._raised_in = {}
                        self._raised_in.setdefault(ident, run.metadata)  # the innermost run sees it first

    def _end(self, kind: EventKind, run_id: UUID, data: Mapping[str, Any], output: Any = None) -> None:
        run = self._runs.pop(run_id, None)
        self._last_id = None
        if run_id == self._root:
            self.root_output, self.has_root_output = output, True
        if run is None or not run.visible or self._stream.stopping:
            return  # after a cancel, end/error callbacks are not reported
        self._events.put(
            Event(kind, run.name, run.id, run.parents, run.tags, run.metadata, data, "", None, run.run_type)
        )

    def _event(self, kind: EventKind, run_id: UUID, data: Mapping[str, Any], name: str | None = None) -> None:
        run = self._runs.get(run_id)
        if run is None:
            run = _Run("token", name or "", str(run_id), (), (), _EMPTY, "", True)
        if run.visible:
            self._events.put(Event(kind, name or run.name, run.id, run.parents, run.tags, run.metadata, data, ""))

    # -- models ------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        name_ = _name(name, serialized, "chat_model")
        self.stats.llm_calls += 1
        data = {"input": {"messages": messages}, **_tools(kwargs)}
        self._start("llm_start", "chat_model", run_id, parent_run_id, name_, tags, metadata, data)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        name_ = _name(name, serialized, "llm")
        self.stats.llm_calls += 1
        self._start("llm_start", "llm", run_id, parent_run_id, name_, tags, metadata, {"input": {"prompts": prompts}})

    def on_llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,  # named, as LangChain passes it: no search for it per token
        **kwargs: Any,
    ) -> None:
        # Per token, so: the last run looked up is kept (LangChain passes the same
        # UUID object for each token of a run); when `tokens()` alone reads the
        # stream, the item is the text itself; else the Event is built as the tuple
        # it is, from the run's own first six fields.
        if run_id is self._last_id:
            run = self._last_run
        else:
            run = self._runs.get(run_id)
            self._last_id, self._last_run = run_id, run
        if run is None or not run.tokens:
            if token:  # counted, not shown: the text of a filtered or "nostream" run
                self.stats.on_token()
            return
        if chunk is None:
            text = token if type(token) is str else _content_text(token)
            piece: Any = None
        elif type(chunk) is ChatGenerationChunk or isinstance(chunk, ChatGenerationChunk):
            piece = chunk.message
            content = piece.content
            text = content if type(content) is str else _content_text(content)
        else:
            piece = chunk
            text = chunk.text
        if text:  # an empty closing chunk or a tool-call chunk is not a token of text
            self.stats.on_token()
        if type(text) is str and self._stream.texts_only:
            self._tokens.put(text)  # no Event, no dict: `tokens()` reads nothing else of it
            return
        tail = ({"chunk": piece}, text, piece, run.run_type, "")
        self._tokens.put(_new_event(Event, run[:6] + tail))  # no list built, no tuple kept per run

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        output: Any = None
        if response.generations and response.generations[0]:
            gen = response.generations[0][0]
            message = getattr(gen, "message", None)
            if message is not None:
                output = message_chunk_to_message(message) if isinstance(message, BaseMessageChunk) else message
            else:
                output = gen.text
        self.stats.on_llm_end(output)
        data: Mapping[str, Any] = {"output": output}
        if run is not None and run.run_type == "llm":
            data = {"output": {"generations": response.generations, "llm_output": response.llm_output}}
        elif run is not None and run.visible and getattr(output, "tool_calls", None) and not self._stream.stopping:
            # The call ended calling tools: the text it streamed was a preamble
            # ("Let me look that up"), not the answer. Say so, so that a UI that
            # showed it can take it back.
            text = _content_text(output.content)
            if text:
                self._events.put(
                    Event(
                        "preamble",
                        run.name,
                        run.id,
                        run.parents,
                        run.tags,
                        run.metadata,
                        {"text": text},
                        "",
                        None,
                        run.run_type,
                    )
                )
        self._end("llm_end", run_id, data, output)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error("llm_error", run_id, error)

    # -- chains ------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_type: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        data = {"input": inputs} if inputs != {"input": ""} else {}
        name_ = _name(name, serialized, "chain")
        self._start("chain_start", run_type or "chain", run_id, parent_run_id, name_, tags, metadata, data)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("chain_end", run_id, {"output": outputs}, outputs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error("chain_error", run_id, error)

    # -- tools and retrievers -------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        data = {"input": inputs if inputs is not None else input_str}
        name_ = _name(name, serialized, "tool")
        self.stats.on_tool_start(str(run_id), name_, data["input"])
        self._start("tool_start", "tool", run_id, parent_run_id, name_, tags, metadata, data)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.stats.on_tool_end(str(run_id), result=output)
        self._end("tool_end", run_id, {"output": output}, output)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        flow = _langgraph.bubble_up(error)
        if flow is None:
            self.stats.on_tool_end(str(run_id), error=error)
        elif flow == "command":
            self.stats.on_tool_end(str(run_id), result=error.args[0] if error.args else None)
        self._error("tool_error", run_id, error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        name_ = _name(name, serialized, "retriever")
        self._start(
            "retriever_start", "retriever", run_id, parent_run_id, name_, tags, metadata, {"input": {"query": query}}
        )

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("retriever_end", run_id, {"output": documents}, documents)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._error("retriever_error", run_id, error)

    # -- agents and custom events ----------------------------------------------------

    def on_agent_action(self, action: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._event("agent_action", run_id, {"action": action})

    def on_agent_finish(self, finish: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._event("agent_finish", run_id, {"finish": finish})

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._runs.get(run_id)
        parents = run.parents if run is not None else ()
        if run is not None and not run.visible:
            return
        self._events.put(
            Event("custom", name, str(run_id), parents, tuple(tags or ()), MappingProxyType(metadata or {}), data)
        )

    # -- LangGraph: interrupts and stream-writer data --------------------------------

    def on_interrupt(self, event: Any) -> None:
        """LangGraph's `GraphCallbackHandler.on_interrupt`: a graph paused.

        Called once per pause by the graph that pauses (the root graph, not its
        subgraphs), with every pending interrupt, after the checkpoint is saved
        and before the graph's end callback.
        """
        interrupts = tuple(event.interrupts)
        run_id = event.run_id
        self.interrupted = True
        if run_id is not None and run_id == self._root:
            self.root_interrupts = interrupts
        run = self._runs.get(run_id) if run_id is not None else None
        if run is not None and not run.visible:
            return
        data = _langgraph.interrupt_data(interrupts, self._raised_in, getattr(event, "checkpoint_id", None))
        if run is None:
            run = _Run("token", "", str(run_id or ""), (), (), _EMPTY, "chain", True)
        self._events.put(
            Event("interrupt", run.name, run.id, run.parents, run.tags, run.metadata, data, "", None, "chain")
        )

    def on_resume(self, event: Any) -> None:
        """LangGraph's `GraphCallbackHandler.on_resume`: nothing to report."""

    def on_stream_write(self, chunk: Any) -> None:
        """The writer `get_stream_writer()` returns inside the stream's graphs.

        Runs in the writer's thread, so the `custom` event takes its place
        among the tokens around it. It belongs to the run that wrote it (a
        node, or a tool), found through the writer's runnable context.
        """
        run: _Run | None = None
        config = var_child_runnable_config.get()
        manager = config.get("callbacks") if config else None
        current = getattr(manager, "parent_run_id", None)
        if current is not None:
            run = self._runs.get(current)
        if run is None and self._root is not None:
            run = self._runs.get(self._root)
        if run is None:
            self._events.put(Event("custom", "", "", (), (), _EMPTY, chunk))
        elif run.visible:
            self._events.put(Event("custom", run.name, run.id, run.parents, run.tags, run.metadata, chunk))


_graph_handler: type[CallbackHandler] | None = None


def handler_type() -> type[CallbackHandler]:
    """`CallbackHandler`, or, once LangGraph is loaded, a subclass that LangGraph
    also recognises as a `GraphCallbackHandler` (so it receives `on_interrupt`)."""
    global _graph_handler
    base = _langgraph.graph_handler_base()
    if base is None:
        return CallbackHandler
    if _graph_handler is None:
        _graph_handler = type("GraphAwareCallbackHandler", (CallbackHandler, base), {"__module__": __name__})
    return _graph_handler
