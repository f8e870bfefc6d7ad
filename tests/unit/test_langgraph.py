"""LangGraph, all of it (issue 15): interrupts and resuming, stream-writer data, subgraphs, hand-offs.

Scripted models; every stream's `output` is compared with `invoke` on the same inputs (on a thread of its own:
interrupt ids depend on the checkpoint, so they are compared with the stream's own thread state instead).
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import callstream
from callstream import Event
from callstream.testing import ScriptedChatModel, agent_script
from tests.conftest import wait_for_no_workers
from tests.helpers import drain_into, run

# -- helpers ---------------------------------------------------------------------------------


def stream_for(face: str, runnable: Any, input: Any, config: Any = None, **kw: Any) -> Any:
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    return fn(runnable, input, config, **kw)


def collect(face: str, runnable: Any, input: Any, config: Any = None, **kw: Any) -> tuple[list[Event], Any]:
    stream = stream_for(face, runnable, input, config, **kw)
    events: list[Event] = []
    drain_into(face, stream, events)
    return events, stream


def answer_tokens(face: str, runnable: Any, input: Any, config: Any) -> tuple[str, Any]:
    stream = stream_for(face, runnable, input, config)
    if face == "sync":
        return "".join(stream.tokens(answer_only=True)), stream

    async def go() -> str:
        return "".join([t async for t in stream.tokens(answer_only=True)])

    return asyncio.run(go()), stream


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


def plain(output: Any) -> Any:
    """An output comparable across threads: interrupts as (value, schema), messages as (type, text, tool calls)."""
    if isinstance(output, dict):
        return {k: plain(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return [plain(v) for v in output]
    if type(output).__name__ == "Interrupt":
        return ("Interrupt", plain(output.value), output.response_schema)
    if isinstance(output, BaseMessage):
        calls = [(c["name"], c["args"]) for c in getattr(output, "tool_calls", [])]
        return (output.type, output.text, calls)
    return output


def only(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


def no_errors(events: list[Event]) -> None:
    errors = [e for e in events if e.kind.endswith("_error")]
    assert errors == [], f"control flow reported as errors: {[(e.kind, e.name, e.data) for e in errors]}"


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if e.kind == "token")


class State(TypedDict):
    log: Annotated[list[str], operator.add]


# -- a StateGraph with interrupt() and get_stream_writer() ------------------------------------


def approval_graph(model: ScriptedChatModel) -> Any:
    """draft (writes progress around a model call) -> ask (interrupt) -> act (a model call) -> END."""

    def draft(state: State) -> dict[str, list[str]]:
        write = get_stream_writer()
        write({"step": "drafting"})
        reply = model.invoke("draft")
        write({"step": "drafted"})
        return {"log": [str(reply.content)]}

    def ask(state: State) -> dict[str, list[str]]:
        decision = interrupt({"question": "Send the draft?", "draft": state["log"][-1]})
        return {"log": [f"human: {decision}"]}

    def act(state: State) -> dict[str, list[str]]:
        return {"log": [str(model.invoke("act").content)]}

    graph = StateGraph(State)
    graph.add_node("draft", draft)
    graph.add_node("ask", ask)
    graph.add_node("act", act)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "ask")
    graph.add_edge("ask", "act")
    graph.add_edge("act", END)
    return graph.compile(checkpointer=InMemorySaver())


def test_state_graph_interrupt_then_resume(face: str) -> None:
    graph = approval_graph(ScriptedChatModel(responses=["Dear Bob", "Sent."]))
    reference = approval_graph(ScriptedChatModel(responses=["Dear Bob", "Sent."]))
    config, ref = thread("s"), thread("ref")

    events, stream = collect(face, graph, {"log": []}, config)
    no_errors(events)
    expected = reference.invoke({"log": []}, ref)
    assert plain(stream.output) == plain(expected)
    assert plain(stream.output)["__interrupt__"] == [
        ("Interrupt", {"question": "Send the draft?", "draft": "Dear Bob"}, None)
    ]
    assert stream.status == "interrupted" and stream.summary.status == "interrupted"

    # one interrupt event: the graph's, before its end; ids are the thread's pending interrupts
    (paused,) = only(events, "interrupt")
    assert events.index(paused) == len(events) - 2 and events[-1].kind == "chain_end"
    assert paused.name == "LangGraph" and paused.parent_ids == () and paused.run_id == events[0].run_id
    pending = graph.get_state(config).interrupts
    assert [i["id"] for i in paused.data["interrupts"]] == [i.id for i in pending]
    assert [i.id for i in stream.output["__interrupt__"]] == [i.id for i in pending]
    (asked,) = paused.data["interrupts"]
    assert asked["value"] == {"question": "Send the draft?", "draft": "Dear Bob"}
    assert asked["node"] == "ask" and len(asked["ns"]) == 1 and asked["ns"][0].startswith("ask:")
    assert paused.data["checkpoint_id"] == graph.get_state(config).config["configurable"]["checkpoint_id"]
    row = paused.to_dict()
    assert row["event"] == "on_interrupt" and row["data"]["interrupts"][0]["id"] == asked["id"]
    assert row["parent_ids"] == [] and row["name"] == "LangGraph"

    # stream-writer data: custom events of the node that wrote them, in order with its tokens
    shown: list[tuple[str, Any]] = [
        (e.kind, e.text if e.kind == "token" else e.data) for e in events if e.kind in ("custom", "token")
    ]
    assert shown[0] == ("custom", {"step": "drafting"}) and shown[-1] == ("custom", {"step": "drafted"})
    assert "".join(t for k, t in shown[1:-1] if k == "token") == "Dear Bob"
    draft_run = next(e for e in events if e.kind == "chain_start" and e.name == "draft")
    for custom in only(events, "custom"):
        assert (custom.name, custom.run_id, custom.parent_ids) == ("draft", draft_run.run_id, draft_run.parent_ids)
        assert custom.metadata["langgraph_node"] == "draft"
        assert custom.to_dict()["event"] == "on_custom_event"

    # resume on the same thread: the rest of the run, completed, as invoke resumes it
    events, stream = collect(face, graph, Command(resume="yes"), config)
    no_errors(events)
    assert only(events, "interrupt") == [] and text(events) == "Sent."
    assert stream.status == "completed" and stream.summary.status == "completed"
    expected = reference.invoke(Command(resume="yes"), ref)
    assert plain(stream.output) == plain(expected) == {"log": ["Dear Bob", "human: yes", "Sent."]}


def test_interrupt_survives_every_sink(sink: str) -> None:
    graph = approval_graph(ScriptedChatModel(responses=["Dear Bob", "Sent."], chunk_size=2))
    events, stream = collect("sync", graph, {"log": []}, thread("s"), sink=sink)
    assert len(only(events, "interrupt")) == 1 and stream.status == "interrupted"
    assert [e.data["step"] for e in only(events, "custom")] == ["drafting", "drafted"]
    events, stream = collect("sync", graph, Command(resume="ok"), thread("s"), sink=sink)
    assert stream.output == {"log": ["Dear Bob", "human: ok", "Sent."]}


def test_parallel_interrupts_all_in_one_event(face: str) -> None:
    def builder() -> Any:
        def left(state: State) -> dict[str, list[str]]:
            return {"log": [f"left: {interrupt('left?')}"]}

        def right(state: State) -> dict[str, list[str]]:
            return {"log": [f"right: {interrupt('right?')}"]}

        graph = StateGraph(State)
        graph.add_node("left", left)
        graph.add_node("right", right)
        graph.add_edge(START, "left")
        graph.add_edge(START, "right")
        return graph.compile(checkpointer=InMemorySaver())

    def by_value(output: dict[str, Any]) -> Any:  # parallel nodes: invoke lists them as they finish
        return {**plain(output), "__interrupt__": sorted(plain(output["__interrupt__"]))}

    graph, reference = builder(), builder()
    events, stream = collect(face, graph, {"log": []}, thread("p"))
    expected = reference.invoke({"log": []}, thread("ref"))
    assert by_value(stream.output) == by_value(expected)
    (paused,) = only(events, "interrupt")
    asked = sorted((i["value"], i["node"]) for i in paused.data["interrupts"])
    assert asked == [("left?", "left"), ("right?", "right")]
    assert [i["id"] for i in paused.data["interrupts"]] == [i.id for i in stream.output["__interrupt__"]]
    answers = {i["id"]: i["value"].upper() for i in paused.data["interrupts"]}
    _, stream = collect(face, graph, Command(resume=answers), thread("p"))
    ref_answers = {i.id: i.value.upper() for i in expected["__interrupt__"]}
    assert stream.output == reference.invoke(Command(resume=ref_answers), thread("ref"))
    assert sorted(stream.output["log"]) == ["left: LEFT?", "right: RIGHT?"] and stream.status == "completed"


def test_static_breakpoint_is_interrupted_and_resumes_with_none(face: str) -> None:
    def builder() -> Any:
        graph = StateGraph(State)
        graph.add_node("one", lambda s: {"log": ["one"]})
        graph.add_node("two", lambda s: {"log": ["two"]})
        graph.add_edge(START, "one")
        graph.add_edge("one", "two")
        return graph.compile(checkpointer=InMemorySaver(), interrupt_before=["two"])

    graph, reference = builder(), builder()
    events, stream = collect(face, graph, {"log": []}, thread("b"))
    assert stream.output == reference.invoke({"log": []}, thread("ref")) == {"log": ["one"]}
    (paused,) = only(events, "interrupt")
    assert paused.data["interrupts"] == [] and stream.status == "interrupted"
    _, stream = collect(face, graph, None, thread("b"))
    assert stream.output == reference.invoke(None, thread("ref")) == {"log": ["one", "two"]}


# -- create_agent + HumanInTheLoopMiddleware: approve, edit, reject ------------------------------


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    write = get_stream_writer()
    write({"progress": f"connecting for {to}"})
    write({"progress": "sent"})
    return f"email sent to {to}"


def hitl_agent(mode: str = "batched") -> Any:
    from langchain.agents import create_agent
    from langchain.agents.middleware import HumanInTheLoopMiddleware

    model = ScriptedChatModel(
        respond=agent_script(
            tool="send_email", args={"to": "bob", "body": "hi"}, answer="Done: {result}", preamble="Let me send it. "
        )
    )
    hitl = HumanInTheLoopMiddleware(interrupt_on={"send_email": True}, interrupt_mode=mode)  # type: ignore[arg-type]
    return create_agent(model, tools=[send_email], middleware=[hitl], checkpointer=InMemorySaver())


QUESTION = {"messages": [{"role": "user", "content": "Email Bob hi"}]}
EDITED = {"name": "send_email", "args": {"to": "alice", "body": "hello"}}
DECISIONS: dict[str, dict[str, Any]] = {
    "approve": {"type": "approve"},
    "edit": {"type": "edit", "edited_action": EDITED},
    "reject": {"type": "reject", "message": "Not now."},
}


def resume_value(mode: str, decision: dict[str, Any], output: Any) -> Any:
    if mode == "batched":
        return {"decisions": [decision]}
    return {i.id: decision for i in output["__interrupt__"]}


@pytest.mark.parametrize("mode", ["batched", "per_call"])
@pytest.mark.parametrize("choice", ["approve", "edit", "reject"])
def test_hitl_agent_approve_edit_reject(face: str, choice: str, mode: str) -> None:
    agent, reference = hitl_agent(mode), hitl_agent(mode)
    config, ref = thread("h"), thread("ref")

    events, stream = collect(face, agent, QUESTION, config)
    no_errors(events)
    expected = reference.invoke(QUESTION, ref)
    assert plain(stream.output) == plain(expected)
    assert stream.status == "interrupted" and [e.kind for e in events if e.kind.startswith("tool_")] == []
    (paused,) = only(events, "interrupt")
    (asked,) = paused.data["interrupts"]
    if mode == "batched":
        assert asked["value"]["action_requests"][0]["args"] == {"to": "bob", "body": "hi"}
        assert asked["node"] == "HumanInTheLoopMiddleware.after_model"
    else:  # raised as the tool call starts, inside the tools node, with a schema for the answer
        assert asked["value"]["type"] == "tool_approval" and asked["value"]["args"] == {"to": "bob", "body": "hi"}
        assert asked["node"] == "tools" and "oneOf" in asked["response_schema"]
    assert asked["id"] == graph_interrupt_ids(agent, config)[0]

    decision = DECISIONS[choice]
    events, stream = collect(face, agent, Command(resume=resume_value(mode, decision, stream.output)), config)
    no_errors(events)
    expected = reference.invoke(Command(resume=resume_value(mode, decision, expected)), ref)
    assert plain(stream.output) == plain(expected)
    assert stream.status == "completed" and only(events, "interrupt") == []
    final = stream.output["messages"][-1].text
    tools = [(e.kind, e.name, e.data.get("input")) for e in events if e.kind.startswith("tool_")]
    progress = [e.data["progress"] for e in only(events, "custom")]
    if choice == "reject":
        assert tools == [] and progress == [] and "Not now." in final
    else:
        to, args = ("bob", {"to": "bob", "body": "hi"}) if choice == "approve" else ("alice", EDITED["args"])
        assert tools == [("tool_start", "send_email", args), ("tool_end", "send_email", None)]
        assert progress == [f"connecting for {to}", "sent"]
        start = next(i for i, e in enumerate(events) if e.kind == "tool_start")
        end = next(i for i, e in enumerate(events) if e.kind == "tool_end")
        for custom in only(events, "custom"):  # the tool's own events, between its start and end
            assert start < events.index(custom) < end
            assert custom.name == "send_email" and custom.run_id == events[start].run_id
            assert custom.metadata["langgraph_node"] == "tools"
        assert final.endswith(f"email sent to {to}")
    assert text(events) == final  # the resumed run streams only the answer (no preamble: no tool call)
    assert [t.name for t in stream.summary.tool_calls] == ([] if choice == "reject" else ["send_email"])


def graph_interrupt_ids(graph: Any, config: RunnableConfig) -> list[str]:
    return [i.id for i in graph.get_state(config).interrupts]


def test_hitl_answer_only_tokens_across_the_pause(face: str) -> None:
    agent = hitl_agent()
    first, stream = answer_tokens(face, agent, QUESTION, thread("t"))
    assert first == "" and stream.status == "interrupted"  # "Let me send it. " was a preamble
    rest, stream = answer_tokens(face, agent, Command(resume={"decisions": [{"type": "approve"}]}), thread("t"))
    assert rest == "Done: email sent to bob" == stream.output["messages"][-1].text
    assert stream.summary.status == "completed"


# -- subgraphs: which agent is speaking, and who asked ---------------------------------------------


def nested_graph(model: ScriptedChatModel) -> Any:
    def research(state: State) -> dict[str, list[str]]:
        get_stream_writer()({"searching": True})
        return {"log": [str(model.invoke("research").content)]}

    def confirm(state: State) -> dict[str, list[str]]:
        return {"log": [f"confirmed: {interrupt('Use these findings?')}"]}

    inner = StateGraph(State)
    inner.add_node("research", research)
    inner.add_node("confirm", confirm)
    inner.add_edge(START, "research")
    inner.add_edge("research", "confirm")
    outer = StateGraph(State)
    outer.add_node("researcher", inner.compile())
    outer.add_node("writer", lambda s: {"log": [str(model.invoke("write").content)]})
    outer.add_edge(START, "researcher")
    outer.add_edge("researcher", "writer")
    return outer.compile(checkpointer=InMemorySaver())


def test_subgraph_events_keep_parent_ids_metadata_and_who_asked(face: str) -> None:
    graph = nested_graph(ScriptedChatModel(responses=["facts", "essay"]))
    reference = nested_graph(ScriptedChatModel(responses=["facts", "essay"]))
    events, stream = collect(face, graph, {"log": []}, thread("n"))
    no_errors(events)
    expected = reference.invoke({"log": []}, thread("ref"))
    assert plain(stream.output) == plain(expected)

    runs = {e.run_id: e for e in events if e.kind == "chain_start"}
    researcher = next(e for e in runs.values() if e.name == "researcher")
    research = next(e for e in runs.values() if e.name == "research")
    # root graph > "researcher" node > the subgraph's own run > its "research" node
    assert research.parent_ids[:2] == (events[0].run_id, researcher.run_id) and len(research.parent_ids) == 3
    tokens = [e for e in events if e.kind == "token" and e.text]
    assert "".join(e.text for e in tokens) == "facts"
    for token in tokens:
        assert token.parent_ids[: len(research.parent_ids) + 1] == (*research.parent_ids, research.run_id)
        assert token.metadata["langgraph_node"] == "research"
        assert str(token.metadata["checkpoint_ns"]).startswith("researcher:")
    (custom,) = only(events, "custom")
    assert custom.data == {"searching": True} and custom.run_id == research.run_id
    assert custom.parent_ids == research.parent_ids and custom.metadata["langgraph_node"] == "research"
    (paused,) = only(events, "interrupt")
    (asked,) = paused.data["interrupts"]
    assert asked["node"] == "confirm" and [p.split(":")[0] for p in asked["ns"]] == ["researcher", "confirm"]
    assert paused.run_id == events[0].run_id  # the root graph paused

    events, stream = collect(face, graph, Command(resume="yes"), thread("n"))
    no_errors(events)
    expected = reference.invoke(Command(resume="yes"), thread("ref"))
    assert stream.output == expected == {"log": ["facts", "confirmed: yes", "essay"]}
    assert text(events) == "essay" and stream.status == "completed"


def test_handoff_to_parent_graph_is_not_an_error(face: str) -> None:
    def hand_off(state: State) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="billing", update={"log": ["triage: to billing"]})

    inner = StateGraph(State)
    inner.add_node("hand_off", hand_off)
    inner.add_edge(START, "hand_off")
    outer = StateGraph(State)
    outer.add_node("triage", inner.compile())
    outer.add_node("billing", lambda s: {"log": ["billing: done"]})
    outer.add_edge(START, "triage")
    graph = outer.compile()
    events, stream = collect(face, graph, {"log": []})
    no_errors(events)
    assert stream.output == graph.invoke({"log": []}) == {"log": ["triage: to billing", "billing: done"]}
    ends = {e.name: e.data["output"] for e in events if e.kind == "chain_end"}
    assert isinstance(ends["triage"], Command) and ends["triage"].goto == "billing"
    assert [e.name for e in events if e.kind == "chain_start"].count("billing") == 1
    assert stream.status == "completed"


def test_stream_writer_in_async_nodes_and_tools_keeps_order() -> None:
    model = ScriptedChatModel(responses=["abc"])

    async def node(state: State) -> dict[str, list[str]]:
        write = get_stream_writer()
        write("before")
        reply = await model.ainvoke("x")
        write("after")
        return {"log": [str(reply.content)]}

    graph = StateGraph(State)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    events, stream = collect("async", graph.compile(), {"log": []})
    order = [e.data if e.kind == "custom" else e.text for e in events if e.kind in ("custom", "token")]
    assert [x for x in order if x] == ["before", "a", "b", "c", "after"]
    assert stream.output == {"log": ["abc"]}


def test_filters_apply_to_interrupt_and_custom_events() -> None:
    graph = approval_graph(ScriptedChatModel(responses=["Dear Bob", "Sent."]))
    events, stream = collect("sync", graph, {"log": []}, thread("f"), include_types=["chat_model"])
    assert {e.kind for e in events} <= {"llm_start", "llm_end", "token"}
    assert stream.status == "interrupted" and "__interrupt__" in stream.output  # the outcome is not filtered


# -- resuming with cancellation, timeouts and errors: the thread stays consistent -------------------


def act_graph(model: ScriptedChatModel) -> Any:
    """ask -> act: `act` calls interrupt() and then streams the model in the same node."""

    def act(state: State) -> dict[str, list[str]]:
        decision = interrupt("Go?")
        return {"log": [f"human: {decision}", str(model.invoke("act").content)]}

    graph = StateGraph(State)
    graph.add_node("act", act)
    graph.add_node("done", lambda s: {"log": ["done"]})
    graph.add_edge(START, "act")
    graph.add_edge("act", "done")
    return graph.compile(checkpointer=InMemorySaver())


ANSWER = "Approved and done."
FINAL = {"log": ["human: yes", ANSWER, "done"]}


def paused_graph(face: str, model: ScriptedChatModel) -> tuple[Any, RunnableConfig]:
    graph, config = act_graph(model), thread("r")
    _, stream = collect(face, graph, {"log": []}, config)
    assert stream.status == "interrupted"
    reference = act_graph(ScriptedChatModel(responses=[ANSWER]))
    reference.invoke({"log": []}, thread("ref"))
    assert reference.invoke(Command(resume="yes"), thread("ref")) == FINAL
    return graph, config


def still_paused(graph: Any, config: RunnableConfig) -> None:
    wait_for_no_workers()  # the cancelled run has saved what it saves
    state = graph.get_state(config)
    assert state.next == ("act",) and [i.value for i in state.interrupts] == ["Go?"] and state.values == {"log": []}


def test_cancelled_resume_can_be_resumed_again(face: str) -> None:
    model = ScriptedChatModel(responses=[ANSWER], delay=0.005)
    graph, config = paused_graph(face, model)
    calls = model.calls
    stream = stream_for(face, graph, Command(resume="yes"), config)
    run(face, stream, lambda e: not (e.kind == "token" and e.text))  # leaves at the first token
    assert stream.status == "cancelled" and model.finished.wait(5)
    assert model.calls == calls + 1 and model.tokens_sent < len(ANSWER)  # stopped at its next token
    still_paused(graph, config)

    events, stream = collect(face, graph, Command(resume="yes"), config)
    assert stream.output == FINAL and text(events) == ANSWER and stream.status == "completed"


def test_timed_out_resume_can_be_resumed_again(face: str) -> None:
    model = ScriptedChatModel(responses=[ANSWER], ttft=0.3)
    graph, config = paused_graph(face, model)
    events: list[Event] = []
    with pytest.raises(callstream.StreamTimeout) as caught:
        drain_into(face, stream_for(face, graph, Command(resume="yes"), config, first_token_timeout=0.05), events)
    assert caught.value.limit == "first_token_timeout" and text(events) == ""
    assert model.finished.wait(5)
    still_paused(graph, config)
    model.ttft = 0.0
    _, stream = collect(face, graph, Command(resume="yes"), config)
    assert stream.output == FINAL and stream.status == "completed"


def test_failed_resume_raises_and_can_be_resumed_again(face: str) -> None:
    boom = ValueError("model down")
    model = ScriptedChatModel(responses=[ANSWER], fail_after=3, error=boom)
    graph, config = paused_graph(face, model)
    events: list[Event] = []
    stream = stream_for(face, graph, Command(resume="yes"), config)
    with pytest.raises(ValueError) as caught:
        drain_into(face, stream, events)
    assert caught.value is model.last_error and text(events) == ANSWER[:3] and stream.status == "error"
    assert [e.kind for e in events if e.kind.endswith("_error")] == ["llm_error", "chain_error", "chain_error"]
    state = graph.get_state(config)  # the failed attempt is recorded; the interrupt still waits
    assert state.next == ("act",) and [i.value for i in state.interrupts] == ["Go?"]
    model.fail_after = None
    _, stream = collect(face, graph, Command(resume="yes"), config)
    assert stream.output == FINAL and stream.status == "completed"


def test_output_raises_for_a_cancelled_interrupted_run() -> None:
    graph = approval_graph(ScriptedChatModel(responses=["Dear Bob", "Sent."], delay=0.005))
    with callstream.iter_callbacks(graph, {"log": []}, thread("x")) as stream:
        for event in stream:
            if event.kind == "token":
                break
    assert stream.status == "cancelled"
    with pytest.raises(RuntimeError, match="cancelled"):
        _ = stream.output
