"""LangGraph support: interrupts, `get_stream_writer()` data, control-flow exceptions.

LangGraph is an optional dependency. Nothing here imports it unless the process
already has (a graph object cannot exist otherwise), so streaming a bare chat
model never pays for it.

- Interrupts. A node that calls `interrupt()` raises `GraphInterrupt`; every
  run it passes through reports it as an error, and the root graph suppresses
  it and pauses. LangGraph (>= 1.1) tells graph-aware handlers about the pause
  once, with every pending interrupt, through `GraphCallbackHandler.on_interrupt`,
  after the checkpoint is saved and before the graph's own end callback. The
  stream's handler is made such a handler (`handler_type`), turns that call
  into one `interrupt` event, and never reports the `GraphInterrupt` as an
  error.
- Stream-writer data. `get_stream_writer()` returns the writer of the graph's
  `Runtime`; LangGraph hands a graph its caller's writer when the caller
  streams (`stream_mode="custom"` of a parent graph). `with_stream_writer`
  gives the graph ours, so every write reaches the stream in the writer's
  thread, in order with the tokens around it, from nodes, tools and subgraphs
  alike. This uses two of LangGraph's config keys; if they are not where this
  module expects them the writes are not captured (the graph runs unchanged).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = (
    "INTERRUPT",
    "bubble_up",
    "interrupt_data",
    "invoke_output",
    "loaded",
    "stream_kwargs",
    "with_stream_writer",
)

#: The key under which `Pregel.invoke` returns pending interrupts.
INTERRUPT = "__interrupt__"


def loaded() -> bool:
    """Whether LangGraph was imported in this process (a None entry blocks its import)."""
    return sys.modules.get("langgraph") is not None


def bubble_up(error: BaseException) -> str | None:
    """`"interrupt"` for a `GraphInterrupt`, `"command"` for a `ParentCommand`
    (a `Command(graph=Command.PARENT)` hand-off), None for a real error.

    Both are LangGraph control flow, raised through every enclosing run on
    their way up, never errors of the run.
    """
    errors = sys.modules.get("langgraph.errors")
    if errors is None:  # if one of them were raised, LangGraph would be loaded
        return None
    if isinstance(error, errors.GraphInterrupt):
        return "interrupt"
    if isinstance(error, errors.ParentCommand):
        return "command"
    return None


def interrupts_of(error: BaseException) -> tuple[Any, ...]:
    """The `Interrupt` objects a `GraphInterrupt` carries."""
    found = error.args[0] if error.args else ()
    return tuple(found) if isinstance(found, (list, tuple)) else ()


def interrupt_data(
    interrupts: tuple[Any, ...],
    raised_in: Mapping[str, Mapping[str, Any]],
    checkpoint_id: str | None,
) -> dict[str, Any]:
    """The `data` of an `interrupt` event.

    `{"interrupts": [{"id", "value", "node", "ns"[, "response_schema"]}, ...],
    "checkpoint_id"}`: `id` and `value` as on LangGraph's `Interrupt`; `node`
    the graph node that called `interrupt()` and `ns` its checkpoint namespace
    (a list, outer graph first: which subgraph asked), when the stream saw it.
    """
    items = []
    for interrupt in interrupts:
        ident = getattr(interrupt, "id", None)
        item: dict[str, Any] = {"id": ident, "value": getattr(interrupt, "value", interrupt)}
        where = raised_in.get(ident) if isinstance(ident, str) else None
        item["node"] = where.get("langgraph_node") if where else None
        ns = where.get("langgraph_checkpoint_ns") if where else None
        item["ns"] = ns.split("|") if isinstance(ns, str) and ns else []
        schema = getattr(interrupt, "response_schema", None)
        if schema is not None:
            item["response_schema"] = schema
        items.append(item)
    return {"interrupts": items, "checkpoint_id": checkpoint_id}


def invoke_output(output: Any, interrupts: tuple[Any, ...]) -> Any:
    """What `Pregel.invoke` returns when the graph paused with `interrupts`."""
    if not interrupts:
        return output
    if isinstance(output, dict):
        return {**output, INTERRUPT: list(interrupts)}
    return {INTERRUPT: list(interrupts)}


def stream_kwargs(runnable: Any) -> dict[str, Any]:
    """What `Pregel.invoke` passes to `Pregel.stream` that changes the output.

    `invoke` reads the graph's output channels (its output schema);
    `stream` by default reads every stream channel, private state included
    (`create_agent`'s `jump_to`, a middleware's own keys).
    """
    if not loaded():
        return {}
    from langgraph.pregel import Pregel

    graph = getattr(runnable, "bound", runnable)  # a graph with .with_config(...) is a binding
    if isinstance(graph, Pregel):
        return {"output_keys": graph.output_channels}
    return {}


def graph_handler_base() -> type | None:
    """LangGraph's `GraphCallbackHandler`, if LangGraph is loaded and has it (>= 1.1)."""
    if not loaded():
        return None
    try:
        from langgraph.callbacks import GraphCallbackHandler
    except ImportError:  # pragma: no cover - LangGraph 1.0
        return None
    return GraphCallbackHandler


def _ignore(chunk: Any) -> None:
    return None


def with_stream_writer(config: dict[str, Any], write: Callable[[Any], None]) -> dict[str, Any]:
    """A copy of `config` under which graphs send `get_stream_writer()` data to `write`.

    A graph run as a node of an outer graph that streams custom data keeps
    doing so: the outer writer is called after ours.
    """
    if not loaded():
        return config
    try:
        from langgraph._internal._constants import CONFIG_KEY_RUNTIME, CONFIG_KEY_STREAM
        from langgraph.pregel.protocol import StreamProtocol
        from langgraph.runtime import DEFAULT_RUNTIME, Runtime
    except ImportError:  # pragma: no cover - a LangGraph that moved them
        return config
    configurable = dict(config.get("configurable") or {})
    outer = configurable.get(CONFIG_KEY_RUNTIME)
    if isinstance(outer, Runtime):
        outer_write = outer.stream_writer

        def both(chunk: Any) -> None:
            write(chunk)
            outer_write(chunk)

        runtime = outer.override(stream_writer=both)
    else:
        runtime = DEFAULT_RUNTIME.override(stream_writer=write)
    configurable[CONFIG_KEY_RUNTIME] = runtime
    # With this key present and "custom" not among its stream modes, a graph
    # takes its writer from the runtime above (as a subgraph does from its
    # parent); a stream that wants no modes receives nothing else.
    configurable.setdefault(CONFIG_KEY_STREAM, StreamProtocol(_ignore, set()))
    return {**config, "configurable": configurable}
