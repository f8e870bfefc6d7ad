"""`Event`: one LangChain callback, as a small immutable value; what a token item is.

A *token item* is what `tokens()` yields text from, what `stream.text` joins,
and the only kind of item a `BoundedSink` may drop or merge: a `str` item (from
`from_callback`), or an `Event` of kind `"token"`. `token_text(item)` is the one
definition; `merge_tokens(first, later)` joins two adjacent token items.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

__all__ = ("Event", "EventKind", "merge_tokens", "token_text")

EventKind = Literal[
    "token",
    "llm_start",
    "llm_end",
    "llm_error",
    "chain_start",
    "chain_end",
    "chain_error",
    "tool_start",
    "tool_end",
    "tool_error",
    "retriever_start",
    "retriever_end",
    "retriever_error",
    "agent_action",
    "agent_finish",
    "custom",
    "interrupt",
    "preamble",
    "attempt",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# Event kind -> (astream_events phase). The run type picks the family.
_PHASE = {
    "token": "stream",
    "llm_start": "start",
    "llm_end": "end",
    "llm_error": "error",
    "chain_start": "start",
    "chain_end": "end",
    "chain_error": "error",
    "tool_start": "start",
    "tool_end": "end",
    "tool_error": "error",
    "retriever_start": "start",
    "retriever_end": "end",
    "retriever_error": "error",
    "agent_action": "agent_action",
    "agent_finish": "agent_finish",
    "preamble": "preamble",
    "attempt": "attempt",
}


class Event(NamedTuple):
    """One callback of a LangChain run, in the order the callbacks fired.

    Attributes:
        kind: what happened (`"token"`, `"llm_start"`, `"tool_end"`, ...;
            `"custom"` for `dispatch_custom_event` and LangGraph's
            `get_stream_writer()` data; `"interrupt"` when a LangGraph graph
            pauses on `interrupt()`, waiting for `Command(resume=...)`).
            `"preamble"` is callstream's own: sent just before the `llm_end` of
            a chat-model call that ended calling tools, when that call had
            streamed text; `data["text"]` is that text, which was a preamble
            ("Let me look that up"), not the answer. A UI that showed the
            call's tokens (same `run_id`) takes them back on this event.
        name: the run's name (`"ChatOpenAI"`, `"RunnableSequence"`, a tool name);
            for `dispatch_custom_event`, the event's name; for stream-writer
            data, the name of the node or tool that wrote it.
        run_id: the run's id, as a string.
        parent_ids: the ids of the enclosing runs, root first.
        tags: the run's tags.
        metadata: the run's metadata.
        data: what the callback carried, under the keys `astream_events` v2
            uses (`input`, `output`, `chunk`, `error`). For a `custom` event,
            the data dispatched or written; for an `interrupt` event,
            `{"interrupts": [{"id", "value", "node", "ns"}, ...], "checkpoint_id"}`.
        text: for a token, its text (`""` for a tool-call or closing chunk).
        chunk: for a token, the original `AIMessageChunk` or `GenerationChunk`.
        run_type: the LangChain run type (`"chat_model"`, `"llm"`, `"chain"`,
            `"tool"`, `"retriever"`, `"prompt"`, `"parser"`), used to name
            the event in `to_dict()`.
        id: the event's position in a relay (`relay.subscribe(key, after=event.id)`
            resumes right after it); `""` for an event not read from a relay.
            Ids of one key are strictly increasing.

    An `"attempt"` event is a relay's: a run published again under the key of
    a failed attempt (a task retry). `data` is `{"attempt": n, "previous":
    {"status", "error"}}`; the new attempt's events follow.
    """

    kind: EventKind
    name: str = ""
    run_id: str = ""
    parent_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = _EMPTY
    data: Mapping[str, Any] = _EMPTY
    text: str = ""
    chunk: Any = None
    run_type: str = ""
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the `astream_events(version="v2")` `StreamEvent` shape.

        `{"event": "on_chat_model_stream", "name", "run_id", "parent_ids",
        "tags", "metadata", "data"}`, so code written for `astream_events`
        works on these events unchanged. `astream_events` has no interrupt
        event: an `interrupt` event is `"on_interrupt"` (the name of LangGraph's
        callback), with the graph's run as `name`/`run_id` and `data` as above.
        """
        if self.kind == "custom":
            event = "on_custom_event"
        elif self.kind == "interrupt":
            event = "on_interrupt"
        elif self.kind == "attempt":
            event = "on_attempt"
        else:
            phase = _PHASE[self.kind]
            family = self.run_type or self.kind.partition("_")[0]
            event = f"on_{family}_{phase}"
        return {
            "event": event,
            "name": self.name,
            "run_id": self.run_id,
            "parent_ids": list(self.parent_ids),
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "data": dict(self.data) if isinstance(self.data, Mapping) else self.data,
        }


def token_text(item: object) -> str | None:
    """The text a token item carries, or None for any other item.

    A `str` item is its own text; a token `Event` carries `event.text` (`""`
    for a tool-call or closing chunk, which is still a token item). Nothing
    else is a token item: not a `str` subclass, not another kind of event.

    The stream's hot loops inline this test; `tests/unit/test_token_items.py`
    checks that they agree with it.
    """
    if type(item) is str:
        return item
    if type(item) is Event and item.kind == "token":
        return item.text
    return None


def merge_tokens(first: object, later: object) -> object | None:
    """Merge two adjacent token items into one, or return None when they do not merge.

    Two `str` items are concatenated. Two token events merge when they belong
    to the same run: the text is joined and the chunks are added (`chunk +
    chunk`, as LangChain aggregates a stream); chunks that cannot be added are
    not merged. Anything else does not merge. `BoundedSink(overflow="coalesce")`
    uses it by default.
    """
    if type(first) is str and type(later) is str:
        return first + later
    if (
        type(first) is Event
        and type(later) is Event
        and first.kind == "token"
        and later.kind == "token"
        and first.run_id == later.run_id
    ):
        chunk = first.chunk
        if chunk is not None and later.chunk is not None:
            try:
                chunk = chunk + later.chunk
            except Exception:  # chunk types that cannot be added are not merged
                return None
        data = dict(first.data)
        if chunk is not None:
            data["chunk"] = chunk
        return first._replace(text=first.text + later.text, chunk=chunk, data=data)
    return None
