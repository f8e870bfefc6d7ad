"""The JSON wire of relays that cross processes: events and outcomes come back as the DESIGN says (issue 18)."""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any
from uuid import UUID

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, GenerationChunk

import callstream
from callstream import Event, ProducerLost, RemoteError, StreamTimeout
from callstream._answer import AnswerFilter
from callstream._relay_store import Outcome
from callstream._wire import dump_event, dump_outcome, dump_value, load_event, load_outcome, load_value
from tests.redis_worker import agent


def roundtrip(event: Event) -> Event:
    text = dump_event(event)
    json.loads(text)  # JSON, nothing else
    return load_event(text, "7")


def jsonable(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def test_an_agent_runs_events_cross_equal_in_every_field_the_design_names() -> None:
    stream = callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]})
    local = list(stream)
    remote = [roundtrip(e) for e in local]
    assert len(remote) == len(local) > 20
    for a, b in zip(local, remote):
        assert (a.kind, a.name, a.run_id, a.parent_ids, a.tags, a.text, a.run_type) == (
            b.kind,
            b.name,
            b.run_id,
            b.parent_ids,
            b.tags,
            b.text,
            b.run_type,
        )
        assert b.metadata == a.metadata and isinstance(b.metadata, MappingProxyType) and b.id == "7"
        for name, value in a.data.items():
            if jsonable(value):
                assert b.data[name] == value, (a.kind, name)
        if a.chunk is not None:  # rebuilt as a message chunk: content, tool-call chunks, usage
            assert type(b.chunk) is type(a.chunk) and b.chunk == a.chunk
            assert b.data["chunk"] is b.chunk
    # what tokens(answer_only=True) and the summary read
    answers = [AnswerFilter(), AnswerFilter()]
    assert [answers[0].feed(e) for e in local] == [answers[1].feed(e) for e in remote]
    ends = [(a.data["output"], b.data["output"]) for a, b in zip(local, remote) if a.kind == "llm_end"]
    assert [b.tool_calls for _, b in ends] == [a.tool_calls for a, _ in ends] and ends[0][1].tool_calls
    assert [b.usage_metadata for _, b in ends] == [a.usage_metadata for a, _ in ends] and ends[0][1].usage_metadata
    tool_end = next(b for b in remote if b.kind == "tool_end")
    assert isinstance(tool_end.data["output"], ToolMessage) and tool_end.data["output"].content == "5"
    start = next(b for b in remote if b.kind == "llm_start")
    assert start.data["tools"] == ["add"] and isinstance(start.data["input"]["messages"][0][0], HumanMessage)


def test_values_are_rebuilt_from_a_fixed_list_of_types() -> None:
    values: list[Any] = [
        None,
        True,
        3,
        2.5,
        "text",
        [1, "a", None],
        {"a": {"b": [1, 2]}},
        (1, "two"),
        {1: "int key", (1, 2): "tuple key"},
        {"$cs": "not a tag of ours"},
        b"\x00\xff",
        AIMessage(content="hi", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}]),
        AIMessageChunk(content="", tool_call_chunks=[{"name": "f", "args": '{"x"', "id": "c1", "index": 0}]),
        HumanMessage(content=[{"type": "text", "text": "hello"}]),
        Document(page_content="doc", metadata={"source": "s"}, id="d1"),
        GenerationChunk(text="gen", generation_info={"k": 1}),
        ChatGeneration(message=AIMessage(content="chat")),
    ]
    for value in values:
        back = load_value(json.loads(json.dumps(dump_value(value))))
        assert back == value and type(back) is type(value), value
    assert load_value(dump_value(UUID(int=1))) == str(UUID(int=1))
    assert math.isnan(load_value(json.loads(json.dumps(dump_value(float("nan"))))))
    assert load_value(dump_value({1, 2})) == [1, 2]
    error = load_value(dump_value(ValueError("bad")))
    assert isinstance(error, RemoteError) and (error.type, error.message) == ("ValueError", "bad")

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    assert load_value(dump_value(Opaque())) == "opaque!"  # its str(), never its pickle


def test_outcomes_cross_with_output_errors_and_summary() -> None:
    stream = callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]})
    list(stream)
    outcome = load_outcome(dump_outcome(Outcome("completed", output=stream.output, summary=stream.summary)))
    assert outcome.output["messages"][-1] == stream.output["messages"][-1]
    assert outcome.summary is not None and outcome.summary.tool_calls[0].name == "add"
    assert outcome.summary.usage == stream.summary.usage
    timeout = load_outcome(dump_outcome(Outcome("timeout", error=StreamTimeout("idle_timeout", 0.5)))).error
    assert isinstance(timeout, StreamTimeout) and (timeout.limit, timeout.seconds) == ("idle_timeout", 0.5)
    lost = load_outcome(dump_outcome(Outcome("lost", error=ProducerLost("gone")))).error
    assert isinstance(lost, ProducerLost) and str(lost) == "gone"
    remote = load_outcome(dump_outcome(Outcome("error", error=KeyError("k")))).error
    assert isinstance(remote, RemoteError) and str(remote) == "KeyError: 'k'"
    again = load_outcome(dump_outcome(Outcome("error", error=remote))).error  # crossing twice keeps the type
    assert isinstance(again, RemoteError) and again.type == "KeyError"


def test_a_langgraph_interrupt_crosses_as_an_interrupt() -> None:
    from langgraph.types import Interrupt

    output = {"answer": "", "__interrupt__": [Interrupt(value={"question": "Send it?"}, id="i1")]}
    back = load_outcome(dump_outcome(Outcome("interrupted", output=output))).output
    assert back == output and isinstance(back["__interrupt__"][0], Interrupt)


def test_plain_events_are_small() -> None:
    assert dump_event(Event("token", text="hi")) == '{"k":"token","t":"hi"}'
    assert roundtrip(Event("token", text="hi")) == Event("token", text="hi", id="7")
    custom = Event("custom", name="progress", data=[1, 2])  # type: ignore[arg-type]  # data that is not a mapping
    assert roundtrip(custom).data == [1, 2]  # type: ignore[comparison-overlap]
