"""Answer-only streaming and the stream summary, on every exit path, both faces."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool

import callstream
from callstream.testing import ScriptedChatModel, agent_script
from tests.helpers import drain_into


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def agent_of(model: ScriptedChatModel, tools: list[Any] | None = None) -> Any:
    from langchain.agents import create_agent

    return create_agent(model, tools=tools or [add, mul])


def answer(face: str, runnable: Any, inputs: Any, **kw: Any) -> tuple[str, Any]:
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    stream: Any = fn(runnable, inputs)  # the face decides which
    if face == "sync":
        return "".join(stream.tokens(answer_only=True, **kw)), stream

    async def go() -> str:
        return "".join([t async for t in stream.tokens(answer_only=True, **kw)])

    return asyncio.run(go()), stream


QUESTION = {"messages": [("user", "go")]}


def test_preamble_before_tool_call_is_not_in_the_answer(face: str) -> None:
    model = ScriptedChatModel(
        respond=agent_script(
            tool="add", args={"a": 2, "b": 3}, preamble="Let me look that up. ", answer="It is {result}."
        )
    )
    agent = agent_of(model)
    text, stream = answer(face, agent, QUESTION)
    expected = agent.invoke(QUESTION)["messages"][-1].content
    assert text == expected == "It is 5."
    s = stream.summary
    assert s.status == "completed" and s.llm_calls == 2
    assert [(t.name, t.args, str(t.result.content), t.error) for t in s.tool_calls] == [
        ("add", {"a": 2, "b": 3}, "5", None)
    ]
    assert s.time_to_first_token is not None and s.tokens > 0 and s.peak_sink_depth >= 1


def test_parallel_tool_calls(face: str) -> None:
    def respond(messages: list[BaseMessage]) -> Any:
        if any(m.type == "tool" for m in messages):
            results = sorted(str(m.content) for m in messages if m.type == "tool")
            return "Results: " + ", ".join(results)
        calls = [
            {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"},
            {"name": "mul", "args": {"a": 3, "b": 4}, "id": "c2", "type": "tool_call"},
        ]
        return AIMessage(content="Checking both.", tool_calls=calls)

    text, stream = answer(face, agent_of(ScriptedChatModel(respond=respond)), QUESTION)
    assert text == "Results: 12, 3"
    assert sorted(t.name for t in stream.summary.tool_calls) == ["add", "mul"]


def test_no_tool_call_streams_the_whole_answer(face: str) -> None:
    long_answer = "A direct answer that is long enough to pass the holdback threshold quickly. " * 3
    text, stream = answer(face, agent_of(ScriptedChatModel(responses=[long_answer])), QUESTION)
    assert text == long_answer
    assert stream.summary.tool_calls == () and stream.summary.llm_calls == 1


def test_holdback_releases_before_the_call_ends() -> None:
    # The added latency is bounded by the holdback, not by the whole answer.
    model = ScriptedChatModel(responses=["x" * 400], chunk_size=10, delay=0.01)
    agent = agent_of(model)
    stream = callstream.iter_callbacks(agent, QUESTION)
    t0 = time.monotonic()
    tokens = stream.tokens(answer_only=True, holdback=50)
    first = next(tokens)
    latency = time.monotonic() - t0
    rest = "".join(tokens)
    assert first + rest == "x" * 400
    assert len(first) == 50 and latency < 0.2  # 5 chunks of 10 ms, not 40


def test_error_mid_answer(face: str) -> None:
    model = ScriptedChatModel(responses=["partial answer that fails"], fail_after=5, error=ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        answer(face, agent_of(model), QUESTION, holdback=0)


def test_nostream_runs_never_stream_tokens() -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableParallel

    hidden = ScriptedChatModel(responses=["secret"]).with_config(tags=["nostream"])
    shown = ScriptedChatModel(responses=["public"])
    par = RunnableParallel(a=hidden | StrOutputParser(), b=shown | StrOutputParser())
    with callstream.iter_callbacks(par, "hi") as s:
        tokens = [e.text for e in s if e.kind == "token" and e.text]
    assert "".join(tokens) == "public"
    assert s.output == {"a": "secret", "b": "public"}


@pytest.mark.parametrize("exit_path", ["completed", "break", "close", "timeout", "error"])
def test_summary_on_every_exit_path(face: str, exit_path: str) -> None:
    model = ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": 1, "b": 1}, answer="y" * 300),
        delay=0.002 if exit_path != "timeout" else 0.05,
        fail_after=50 if exit_path == "error" else None,
        error=ValueError("mid-answer"),
    )
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    stream = fn(agent_of(model), QUESTION, timeout=0.3 if exit_path == "timeout" else None)

    def body(i: int) -> bool:
        if exit_path == "close" and i == 20:
            stream.close()
        return not (exit_path == "break" and i == 20)

    try:
        if face == "sync":
            with stream:
                for i, _ in enumerate(stream):
                    if not body(i):
                        break
        else:

            async def go() -> None:
                async with stream:
                    i = 0
                    async for _ in stream:
                        if not body(i):
                            break
                        i += 1

            asyncio.run(go())
    except (ValueError, callstream.StreamTimeout):
        pass
    s = stream.summary
    expected = {"completed": "completed", "break": "cancelled", "close": "cancelled", "timeout": "timeout"}
    assert s.status == expected.get(exit_path, "error")
    assert s.tool_calls and s.tool_calls[0].name == "add"
    assert s.llm_calls >= 1 and s.duration > 0
    assert (s.error is not None) == (exit_path in ("timeout", "error"))
    if exit_path == "completed":
        assert s.text.endswith("y" * 300) and s.tokens_per_second and s.longest_gap is not None
    assert callstream.Summary is type(s)
    assert s.to_dict()["status"] == s.status


def test_summary_is_live() -> None:
    # `summary` is a fresh snapshot on each access, while the run goes (the `stats` accessor is gone: issue 13).
    model = ScriptedChatModel(responses=["abcdef"], delay=0.005)
    with callstream.iter_callbacks(model, "hi") as s:
        next(e for e in s if e.kind == "token")
        summary = s.summary
        assert summary.tokens >= 1 and summary.llm_calls == 1
        assert summary.status == "running"
        assert not hasattr(s, "stats")


def test_summary_in_the_final_sse_event() -> None:
    import json

    from callstream.sse import sse

    model = ScriptedChatModel(respond=agent_script(tool="add", args={"a": 1, "b": 2}, answer="{result}"))
    raw = b"".join(sse(callstream.iter_callbacks(agent_of(model), QUESTION), summary=True)).decode()
    done = json.loads(raw.split("event: done\n")[1].split("data: ", 1)[1].split("\n")[0])
    assert done["status"] == "completed"
    assert done["summary"]["tool_calls"] == [{"name": "add", "args": {"a": 1, "b": 2}, "result": "3", "error": None}]


def test_answer_only_validation() -> None:
    with pytest.raises(ValueError, match="holdback"):
        callstream.iter_callbacks(ScriptedChatModel(), "hi").tokens(answer_only=True, holdback=-1)


def preamble_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        respond=agent_script(
            tool="add", args={"a": 4, "b": 5}, preamble="Let me compute that. ", answer="It is {result}."
        )
    )


def test_answer_only_with_agent_executor(face: str) -> None:
    from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("human", "{input}"), ("placeholder", "{agent_scratchpad}")])
    executor = AgentExecutor(agent=create_tool_calling_agent(preamble_model(), [add], prompt), tools=[add])
    text, stream = answer(face, executor, {"input": "4+5?"})
    assert text == "It is 9." == stream.output["output"]
    assert [t.name for t in stream.summary.tool_calls] == ["add"]


def test_answer_only_with_state_graph_and_tool_node(face: str) -> None:
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    model = preamble_model().bind_tools([add])

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([add]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    app = graph.compile()
    text, stream = answer(face, app, QUESTION)
    assert text == "It is 9." == stream.output["messages"][-1].content
    assert stream.summary.llm_calls == 2


def test_summary_sums_reported_usage() -> None:
    model = preamble_model()
    stream = callstream.iter_callbacks(agent_of(model), QUESTION)
    "".join(stream.tokens())
    usage = stream.summary.usage
    assert usage is not None and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


LONG_PREAMBLE = (
    "Sure! I'd be happy to help you with that calculation. Let me use the calculator tool "
    "to get the exact result for you. "
)


def long_preamble_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": 2, "b": 2}, preamble=LONG_PREAMBLE, answer="It is {result}.")
    )


def test_a_preamble_longer_than_holdback_leaks_unless_holdback_is_none(face: str) -> None:
    assert len(LONG_PREAMBLE) > 80
    leaked, _ = answer(face, agent_of(long_preamble_model()), QUESTION)
    assert leaked == LONG_PREAMBLE + "It is 4."  # the documented trade-off of a finite holdback
    exact, stream = answer(face, agent_of(long_preamble_model()), QUESTION, holdback=None)
    assert exact == "It is 4." == stream.output["messages"][-1].content


def test_holdback_none_still_streams_calls_without_tools() -> None:
    model = ScriptedChatModel(responses=["abc" * 50], chunk_size=3)
    tokens = list(callstream.iter_callbacks(model, "hi").tokens(answer_only=True, holdback=None))
    assert len(tokens) == 50 and "".join(tokens) == "abc" * 50


def test_holdback_none_holds_a_tool_bound_answer_until_its_call_ends() -> None:
    model = ScriptedChatModel(responses=["x" * 300], chunk_size=10)
    tokens = list(callstream.iter_callbacks(agent_of(model), QUESTION).tokens(answer_only=True, holdback=None))
    assert tokens == ["x" * 300]


def test_the_preamble_event_marks_text_already_sent(face: str) -> None:
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    events: list[callstream.Event] = []
    drain_into(face, fn(agent_of(long_preamble_model()), QUESTION), events)
    # What a UI does: show tokens as they come, take a run's text back on its preamble event.
    shown: dict[str, str] = {}
    order: list[str] = []
    preambles = []
    for e in events:
        if e.kind == "token" and e.text:
            if e.run_id not in shown:
                order.append(e.run_id)
            shown[e.run_id] = shown.get(e.run_id, "") + e.text
        elif e.kind == "preamble":
            preambles.append(e)
            assert e.data["text"] == shown.pop(e.run_id)
    assert len(preambles) == 1 and preambles[0].data["text"] == LONG_PREAMBLE
    assert "".join(shown[r] for r in order if r in shown) == "It is 4."
    # it comes right before its call's llm_end, and has a to_dict() name of its own
    i = events.index(preambles[0])
    assert events[i + 1].kind == "llm_end" and events[i + 1].run_id == preambles[0].run_id
    assert preambles[0].to_dict()["event"] == "on_chat_model_preamble"


def test_no_preamble_event_when_the_tool_call_has_no_text() -> None:
    model = ScriptedChatModel(respond=agent_script(tool="add", args={"a": 1, "b": 1}, answer="{result}"))
    with callstream.iter_callbacks(agent_of(model), QUESTION) as s:
        kinds = [e.kind for e in s]
    assert "preamble" not in kinds and kinds.count("tool_start") == 1


def test_summary_tokens_count_tokens_with_text(face: str) -> None:
    # The scripted model, like real chat models, ends a call with an empty chunk.
    model = ScriptedChatModel(responses=["abcdefghij"], chunk_size=1)
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    stream = fn(model, "hi")
    events: list[callstream.Event] = []
    drain_into(face, stream, events)
    token_events = [e for e in events if e.kind == "token"]
    assert len(token_events) > 10  # the empty closing chunk is an event...
    assert stream.summary.tokens == 10 == sum(1 for e in token_events if e.text)  # ...not a token
    assert stream.summary.text == "abcdefghij"


def test_sse_carries_the_preamble_event() -> None:
    import json

    from callstream.sse import sse

    raw = b"".join(sse(callstream.iter_callbacks(agent_of(long_preamble_model()), QUESTION))).decode()
    frames = [f for f in raw.split("\n\n") if "event: preamble" in f]
    assert len(frames) == 1
    payload = json.loads(frames[0].split("data: ", 1)[1])
    assert payload["text"] == LONG_PREAMBLE and payload["run_id"]
