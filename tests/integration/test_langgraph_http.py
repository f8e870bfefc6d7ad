"""LangGraph human-in-the-loop over real HTTP: `ChatOpenAI` (the real `openai` client) against the local server."""

from __future__ import annotations

import itertools
import operator
from typing import Annotated, Any, TypedDict

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from pydantic import SecretStr

import callstream
from callstream import Event
from callstream.testing import OpenAIServer
from tests.conftest import wait_for_no_workers
from tests.helpers import drain_into, run
from tests.unit.test_langgraph import collect, no_errors, only, plain, stream_for, text, thread

_tags = itertools.count()


def chat(server: OpenAIServer, **opts: Any) -> tuple[ChatOpenAI, str]:
    tag = f"lg{next(_tags)}"
    spec = ",".join(f"{k}={v}" for k, v in {**opts, "tag": tag}.items())
    model = ChatOpenAI(
        base_url=server.base_url,
        api_key=SecretStr("test-key"),
        model=f"scripted:{spec}",
        max_retries=0,
        http_async_client=httpx.AsyncClient(),  # one per test: each runs its own event loop
    )
    return model, tag


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    write = get_stream_writer()
    write({"progress": "connecting"})
    write({"progress": "sent"})
    return f"email sent to {to}"


def hitl_agent(model: ChatOpenAI, checkpointer: Any) -> Any:
    from langchain.agents import create_agent
    from langchain.agents.middleware import HumanInTheLoopMiddleware

    hitl = HumanInTheLoopMiddleware(interrupt_on={"send_email": True})
    return create_agent(model, tools=[send_email], middleware=[hitl], checkpointer=checkpointer)


QUESTION = {"messages": [{"role": "user", "content": "Email the otters"}]}
DECISIONS: dict[str, dict[str, Any]] = {
    "approve": {"type": "approve"},
    "edit": {"type": "edit", "edited_action": {"name": "send_email", "args": {"to": "seals", "body": "hi"}}},
    "reject": {"type": "reject", "message": "Not today."},
}


@pytest.mark.parametrize("choice", ["approve", "edit", "reject"])
def test_hitl_agent_over_http(openai_server: OpenAIServer, face: str, choice: str) -> None:
    # One agent per phase over one checkpointer: the async face runs each phase on an event loop of
    # its own, and an async HTTP client's pooled connections belong to one loop.
    saver = InMemorySaver()
    model, tag = chat(openai_server)
    agent, reference = hitl_agent(model, saver), hitl_agent(chat(openai_server)[0], InMemorySaver())
    config, ref = thread(f"h-{choice}"), thread(f"ref-{choice}")

    events, stream = collect(face, agent, QUESTION, config)
    no_errors(events)
    expected = reference.invoke(QUESTION, ref)
    assert plain(stream.output) == plain(expected)
    assert stream.status == "interrupted"
    (paused,) = only(events, "interrupt")
    (asked,) = paused.data["interrupts"]
    # the server's tool call, arguments made from the tool's schema
    assert asked["value"]["action_requests"][0]["args"] == {"to": "otters", "body": "otters"}
    assert asked["id"] == stream.output["__interrupt__"][0].id == agent.get_state(config).interrupts[0].id
    assert openai_server.stats(tag)[0]["stream"] is True  # the model call streamed over HTTP

    resume: Command[Any] = Command(resume={"decisions": [DECISIONS[choice]]})
    events, stream = collect(face, hitl_agent(chat(openai_server)[0], saver), resume, config)
    no_errors(events)
    assert plain(stream.output) == plain(reference.invoke(resume, ref))
    assert stream.status == "completed" and only(events, "interrupt") == []
    progress = [e.data["progress"] for e in only(events, "custom")]
    if choice == "reject":
        assert progress == [] and "Not today." in text(events)
    else:
        to = "otters" if choice == "approve" else "seals"
        assert progress == ["connecting", "sent"]
        kinds = [e.kind for e in events if e.kind in ("tool_start", "custom", "tool_end")]
        assert kinds == ["tool_start", "custom", "custom", "tool_end"]
        assert text(events).startswith("The answer is ") and text(events).endswith(f"email sent to {to}.")
    assert text(events) == stream.output["messages"][-1].text


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def act_graph(model: ChatOpenAI, checkpointer: Any = None) -> Any:
    def act(state: State) -> dict[str, list[str]]:
        decision = interrupt("Go?")
        write = get_stream_writer()
        write("calling the model")
        reply = model.invoke(f"go ahead ({decision})")
        write("called")
        return {"log": [f"human: {decision}", str(reply.content)]}

    graph = StateGraph(State)
    graph.add_node("act", act)
    graph.add_edge(START, "act")
    return graph.compile(checkpointer=checkpointer or InMemorySaver())


def paused(face: str, graph: Any, config: RunnableConfig) -> None:
    _, stream = collect(face, graph, {"log": []}, config)
    assert stream.status == "interrupted" and graph.get_state(config).next == ("act",)


def test_resume_streams_over_http_as_invoke_resumes(openai_server: OpenAIServer, face: str) -> None:
    graph, reference = act_graph(chat(openai_server, tokens=8)[0]), act_graph(chat(openai_server, tokens=8)[0])
    paused(face, graph, thread("g"))
    reference.invoke({"log": []}, thread("ref"))
    graph = act_graph(chat(openai_server, tokens=8)[0], graph.checkpointer)  # a fresh client, the same thread
    events, stream = collect(face, graph, Command(resume="yes"), thread("g"))
    assert stream.output == reference.invoke(Command(resume="yes"), thread("ref"))
    assert stream.output == {"log": ["human: yes", "".join(f"w{i} " for i in range(8))]}
    shown = [e.data if e.kind == "custom" else e.text for e in events if e.kind in ("custom", "token")]
    assert [x for x in shown if x] == ["calling the model", *(f"w{i} " for i in range(8)), "called"]
    assert text(events) == "".join(f"w{i} " for i in range(8))


@pytest.mark.parametrize("how", ["break", "timeout", "error"])
def test_resume_cut_short_over_http_then_resumed_again(openai_server: OpenAIServer, face: str, how: str) -> None:
    opts = {
        "break": {"tokens": 2000, "delay_ms": 2},
        "timeout": {"ttft_ms": 300, "tokens": 2000, "delay_ms": 2},
        "error": {"fail_after": 3},
    }[how]
    config = thread(f"c-{how}")
    graph = act_graph(chat(openai_server)[0])
    paused(face, graph, config)
    cut, tag = chat(openai_server, **opts)
    graph = act_graph(cut, graph.checkpointer)

    events: list[Event] = []
    # The limit must pass only where the model stalls (300 ms before its first token):
    # elsewhere a loaded machine may take longer than 0.1 s to the first token.
    limit = 0.1 if how == "timeout" else 5.0
    stream = stream_for(face, graph, Command(resume="yes"), config, first_token_timeout=limit)
    if how == "break":
        run(face, stream, lambda e: not (e.kind == "token" and e.text))
        assert stream.status == "cancelled"
    else:
        with pytest.raises(callstream.StreamTimeout if how == "timeout" else Exception) as caught:
            drain_into(face, stream, events)
        assert stream.status == ("timeout" if how == "timeout" else "error")
        if how == "error":
            assert "scripted mid-stream failure" in str(caught.value)
    row = openai_server.wait_ended(tag)[-1]
    if how != "error":  # the model's HTTP response was closed, not read to the end
        assert row["disconnected"] or not row["done"]
    wait_for_no_workers()
    state = graph.get_state(config)
    assert state.next == ("act",) and [i.value for i in state.interrupts] == ["Go?"]

    # the same thread (the same checkpointer), resumed again with a model that answers
    good, _ = chat(openai_server, tokens=3)
    events, stream = collect(face, act_graph(good, graph.checkpointer), Command(resume="yes"), config)
    assert stream.output == {"log": ["human: yes", "w0 w1 w2 "]} and stream.status == "completed"
    # Event.data is annotated Mapping, but a custom event carries whatever the node wrote (a str here)
    assert [e.data for e in only(events, "custom")] == ["calling the model", "called"]  # type: ignore[comparison-overlap]
