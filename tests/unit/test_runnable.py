"""iter_callbacks / aiter_callbacks over every kind of LangChain runnable (scripted models)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableParallel
from langchain_core.tools import tool

import callstream
from callstream import Event
from callstream.sinks import SinkName
from callstream.testing import ScriptedChatModel, ScriptedLLM, agent_script, tool_call
from tests.conftest import wait_for_no_workers
from tests.helpers import drain_into, run_tokens

# -- helpers: one body for both faces ------------------------------------------


def stream_for(face: str, runnable: Any, input: Any, **kw: Any) -> Any:
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    return fn(runnable, input, **kw)


def collect(face: str, runnable: Any, input: Any, **kw: Any) -> tuple[list[Event], Any]:
    stream = stream_for(face, runnable, input, **kw)
    events: list[Event] = []
    drain_into(face, stream, events)
    return events, stream


def tokens(events: list[Event]) -> list[str]:
    return [e.text for e in events if e.kind == "token" and e.text]


def kinds(events: list[Event], *wanted: str) -> list[str]:
    return [e.kind for e in events if e.kind in wanted]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(a: int) -> int:
    """A tool that fails."""
    raise RuntimeError("tool blew up")


# -- models -------------------------------------------------------------------------


def test_bare_chat_model(face: str) -> None:
    model = ScriptedChatModel(responses=["Hello world"])
    events, stream = collect(face, model, "hi")
    assert "".join(tokens(events)) == "Hello world"
    assert kinds(events, "llm_start", "llm_end") == ["llm_start", "llm_end"]
    assert isinstance(stream.output, AIMessage)
    assert stream.output.content == model.invoke("hi").content
    assert stream.text == "Hello world"


def test_bare_llm_streams_through_stream(face: str) -> None:
    llm = ScriptedLLM(responses=["abc def"], chunk_size=2)
    events, stream = collect(face, llm, "q")
    assert tokens(events) == ["ab", "c ", "de", "f"]
    assert stream.output == llm.invoke("q") == "abc def"
    assert all(e.run_type == "llm" for e in events)


@pytest.mark.parametrize("kind", ["chat", "llm"])
def test_lcel_chain_streams_tokens_and_output_equals_invoke(face: str, kind: str) -> None:
    model: Any = ScriptedChatModel(responses=["A B C"]) if kind == "chat" else ScriptedLLM(responses=["A B C"])
    chain = ChatPromptTemplate.from_template("say {x}") | model | StrOutputParser()
    events, stream = collect(face, chain, {"x": 1})
    assert tokens(events) == list("A B C")
    assert stream.output == chain.invoke({"x": 1}) == "A B C"
    names = [e.name for e in events if e.kind == "chain_start"]
    assert names[0] == "RunnableSequence" and "StrOutputParser" in names
    token_parents = {e.parent_ids for e in events if e.kind == "token"}
    root = next(e.run_id for e in events if e.kind == "chain_start")
    assert token_parents == {(root,)}  # nested under the chain, root first


def test_chat_model_inside_chain_streams_without_streaming_flag() -> None:
    model = ScriptedChatModel(responses=["xyz"])
    assert "streaming" not in model.model_fields_set
    chain = RunnableLambda(lambda x: x) | model
    assert list(callstream.iter_callbacks(chain, "hi").tokens()) == ["x", "y", "z"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # LLMChain is deprecated, and still used
def test_legacy_llm_chain(face: str) -> None:
    from langchain_classic.chains import LLMChain

    model = ScriptedChatModel(responses=["legacy answer"])
    chain = LLMChain(llm=model, prompt=PromptTemplate.from_template("Q: {q}"))
    events, stream = collect(face, chain, {"q": "why"})
    assert "".join(tokens(events)) == "legacy answer"
    assert stream.output == {"q": "why", "text": "legacy answer"}


# -- agents and graphs ---------------------------------------------------------------


def agent_model(**kw: Any) -> ScriptedChatModel:
    return ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": 2, "b": 3}, answer="The sum is {result}.", **kw)
    )


def test_create_agent_streams_answer_and_tool_events(face: str) -> None:
    from langchain.agents import create_agent

    agent = create_agent(agent_model(), tools=[add])
    inputs = {"messages": [{"role": "user", "content": "2+3?"}]}
    events, stream = collect(face, agent, inputs)
    assert "".join(tokens(events)) == "The sum is 5."  # tool-call chunks carry no text
    assert kinds(events, "llm_start") == ["llm_start", "llm_start"]  # F04: both LLM calls
    tool_events = [(e.kind, e.name) for e in events if e.kind.startswith("tool_")]
    assert tool_events == [("tool_start", "add"), ("tool_end", "add")]
    calls = [e.chunk for e in events if e.kind == "token" and e.chunk is not None and e.chunk.tool_call_chunks]
    assert calls and calls[0].tool_call_chunks[0]["name"] == "add"
    expected = agent.invoke(inputs)  # type: ignore[call-overload]  # message dicts, coerced at run time
    assert [(type(m), m.content) for m in stream.output["messages"]] == [
        (type(m), m.content) for m in expected["messages"]
    ]


def test_create_agent_preamble_text_and_handled_tool_error_goes_on(face: str) -> None:
    from langchain.agents import create_agent

    # Invalid arguments: the tool errors, LangGraph's ToolNode hands the error
    # back to the model, which answers anyway.
    model = ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": "two", "b": 3}, answer="Recovered.", preamble="Let me check. ")
    )
    agent = create_agent(model, tools=[add])
    events, stream = collect(face, agent, {"messages": [{"role": "user", "content": "go"}]})
    assert "".join(tokens(events)) == "Let me check. Recovered."
    assert ("tool_error", "add") in [(e.kind, e.name) for e in events]
    assert stream.status == "completed"


def test_agent_executor_with_tool_calling_agent(face: str) -> None:
    from langchain_classic.agents import AgentExecutor, create_tool_calling_agent

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You add."), ("human", "{input}"), ("placeholder", "{agent_scratchpad}")]
    )
    model = agent_model()
    executor = AgentExecutor(agent=create_tool_calling_agent(model, [add], prompt), tools=[add])
    events, stream = collect(face, executor, {"input": "2+3?"})
    assert "".join(tokens(events)) == "The sum is 5."
    assert kinds(events, "agent_action", "agent_finish") == ["agent_action", "agent_finish"]
    assert ("tool_end", "add") in [(e.kind, e.name) for e in events]
    assert stream.output == executor.invoke({"input": "2+3?"})


def test_plain_state_graph_with_model_nodes(face: str) -> None:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        topic: str
        draft: str
        final: str

    writer = ScriptedChatModel(responses=["draft!"])
    editor = ScriptedChatModel(responses=["final!"])

    def write(state: State) -> dict[str, str]:
        return {"draft": str(writer.invoke(state["topic"]).content)}

    def edit(state: State) -> dict[str, str]:
        return {"final": str(editor.invoke(state["draft"]).content)}

    graph = StateGraph(State)
    graph.add_node("write", write)
    graph.add_node("edit", edit)
    graph.add_edge(START, "write")
    graph.add_edge("write", "edit")
    graph.add_edge("edit", END)
    app = graph.compile()
    events, stream = collect(face, app, {"topic": "otters"})
    assert "".join(tokens(events)) == "draft!final!"
    assert stream.output == {"topic": "otters", "draft": "draft!", "final": "final!"}
    node_names = [e.name for e in events if e.kind == "chain_start"]
    assert "write" in node_names and "edit" in node_names


def test_retriever_in_chain_emits_retriever_events(face: str) -> None:
    class Docs(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content=f"about {query}")]

    model = ScriptedChatModel(responses=["ok"])
    chain = (
        {"context": Docs() | (lambda docs: docs[0].page_content), "q": lambda x: x}
        | ChatPromptTemplate.from_template("{context}: {q}")
        | model
    )
    events, stream = collect(face, chain, "otters")
    assert kinds(events, "retriever_start", "retriever_end") == ["retriever_start", "retriever_end"]
    end = next(e for e in events if e.kind == "retriever_end")
    assert end.data["output"][0].page_content == "about otters"
    assert stream.output.content == "ok"


def test_custom_events_from_dispatch_custom_event(face: str) -> None:
    def step(x: str) -> str:
        dispatch_custom_event("progress", {"pct": 50})
        return x

    events, _ = collect(face, RunnableLambda(step), "x")
    custom = [e for e in events if e.kind == "custom"]
    assert len(custom) == 1 and custom[0].name == "progress" and custom[0].data == {"pct": 50}
    assert custom[0].to_dict()["event"] == "on_custom_event"


# -- events and astream_events parity -----------------------------------------------------


def shape(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    # name, event and depth; `on_*_stream` of non-LLM runs are astream_events-only
    skip = {"on_chain_stream", "on_prompt_stream", "on_parser_stream", "on_tool_stream", "on_retriever_stream"}
    return [(r["event"], r["name"], len(r["parent_ids"])) for r in rows if r["event"] not in skip]


def test_to_dict_sequence_matches_astream_events_v2() -> None:
    chain = ChatPromptTemplate.from_template("say {x}") | ScriptedChatModel(responses=["hey you"]) | StrOutputParser()
    ours = [e.to_dict() for e in callstream.iter_callbacks(chain, {"x": 1})]

    async def theirs() -> list[dict[str, Any]]:
        return [dict(e) async for e in chain.astream_events({"x": 1}, version="v2")]

    reference = asyncio.run(theirs())
    assert shape(ours) == shape(reference)
    ours_tokens = [r["data"]["chunk"].content for r in ours if r["event"] == "on_chat_model_stream"]
    ref_tokens = [r["data"]["chunk"].content for r in reference if r["event"] == "on_chat_model_stream"]
    assert ours_tokens == ref_tokens


def test_events_are_immutable_and_complete() -> None:
    events = list(callstream.iter_callbacks(ScriptedChatModel(responses=["a"]), "hi", config={"tags": ["t1"]}))
    token = next(e for e in events if e.kind == "token")
    assert token.tags == ("t1",) and isinstance(token.chunk, AIMessageChunk) and token.data["chunk"] is token.chunk
    with pytest.raises(AttributeError):
        token.text = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        token.metadata["x"] = 1  # type: ignore[index]


# -- filters ---------------------------------------------------------------------------


def test_filters_like_astream_events() -> None:
    model = ScriptedChatModel(responses=["ab"]).with_config(run_name="answerer", tags=["final"])
    chain = ChatPromptTemplate.from_template("{x}") | model | StrOutputParser()
    only_model = list(callstream.iter_callbacks(chain, {"x": 1}, include_names=["answerer"]))
    assert {e.name for e in only_model} == {"answerer"}
    by_type = list(callstream.iter_callbacks(chain, {"x": 1}, include_types=["prompt", "parser"]))
    assert {e.run_type for e in by_type} == {"prompt", "parser"}
    no_final = list(callstream.iter_callbacks(chain, {"x": 1}, exclude_tags=["final"]))
    assert not [e for e in no_final if e.kind == "token"]
    with pytest.raises(TypeError, match="list of strings"):
        callstream.iter_callbacks(chain, {}, include_names="answerer")


# -- errors -------------------------------------------------------------------------------


def test_model_error_mid_stream_after_tokens(face: str) -> None:
    error = ValueError("model died")
    model = ScriptedChatModel(responses=["abcdef"], fail_after=3, error=error)
    chain = ChatPromptTemplate.from_template("{x}") | model | StrOutputParser()
    stream = stream_for(face, chain, {"x": 1})
    got: list[Event] = []
    with pytest.raises(ValueError) as info:
        drain_into(face, stream, got)
    assert info.value is model.last_error  # the object the model raised (a fresh copy of `error` per run)
    assert type(info.value) is ValueError and info.value.args == error.args
    assert tokens(got) == ["a", "b", "c"]
    assert stream.text == "abc"
    assert "llm_error" in [e.kind for e in got]


def test_unhandled_tool_error_reaches_consumer() -> None:
    from langchain_classic.agents import AgentExecutor, create_tool_calling_agent

    prompt = ChatPromptTemplate.from_messages([("human", "{input}"), ("placeholder", "{agent_scratchpad}")])
    model = ScriptedChatModel(respond=agent_script(tool="explode", args={"a": 1}, answer="never"))
    executor = AgentExecutor(agent=create_tool_calling_agent(model, [explode], prompt), tools=[explode])
    with pytest.raises(RuntimeError, match="tool blew up"):
        list(callstream.iter_callbacks(executor, {"input": "go"}))


def test_parser_error_and_bad_input() -> None:
    def bad_parse(text: str) -> str:
        raise KeyError("parser")

    chain = ScriptedChatModel(responses=["x"]) | StrOutputParser() | bad_parse
    with pytest.raises(KeyError, match="parser"):
        list(callstream.iter_callbacks(chain, "hi"))
    prompt_chain = ChatPromptTemplate.from_template("{needed}") | ScriptedChatModel()
    with pytest.raises(KeyError):
        list(callstream.iter_callbacks(prompt_chain, {"other": 1}))


def test_bad_runnable_and_config() -> None:
    with pytest.raises(TypeError, match="Runnable"):
        callstream.iter_callbacks(lambda x: x, "hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RunnableConfig"):
        callstream.iter_callbacks(ScriptedChatModel(), "hi", config=["x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive number"):
        callstream.aiter_callbacks(ScriptedChatModel(), "hi", idle_timeout=-1)


def test_list_content_and_tool_call_chunks_lose_no_text() -> None:
    # F05: list content, tool-call-only chunks, a non-str token
    class ListContent(ScriptedChatModel):
        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
            for piece in ["Hel", "lo"]:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=[{"type": "text", "text": piece}]))
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
            call = AIMessageChunk(content="", tool_call_chunks=[{"name": "add", "args": "{}", "id": "1", "index": 0}])
            chunk = ChatGenerationChunk(message=call)
            if run_manager:
                run_manager.on_llm_new_token(["not", "a", "str"], chunk=chunk)
            yield chunk

    model = ListContent()
    stream = callstream.iter_callbacks(model, "hi")
    text = "".join(stream.tokens())
    assert text == "Hello" == stream.output.text


@pytest.mark.parametrize("sink", ["queue", "deque", "bounded"])
def test_tokens_whatever_the_items_carry(face: str, sink: SinkName) -> None:
    # tokens() without an answer filter reads the text alone: over a sink of ours a
    # token's item may be its text, not its Event; a sink with hooks still gets Events.
    seen: list[Any] = []

    def droppable(item: Any) -> bool:
        seen.append(item)
        return False  # keep everything

    chain = ChatPromptTemplate.from_template("say {x}") | ScriptedChatModel(responses=["A B C"]) | StrOutputParser()
    for runnable, input in ((chain, {"x": 1}), (ScriptedChatModel(responses=["A B C"]), "hi")):
        sink_: Any = callstream.BoundedSink(1, "drop_newest", droppable=droppable) if sink == "bounded" else sink
        stream = stream_for(face, runnable, input, sink=sink_)
        assert run_tokens(face, stream) == list("A B C")
        assert stream.text == "A B C" and stream.summary.tokens == 5 and stream.status == "completed"
    if sink == "bounded":
        assert seen and all(type(item) is Event for item in seen)


# -- cancellation and timeouts ------------------------------------------------------------


def test_break_stops_the_model_at_its_next_token(face: str) -> None:
    model = ScriptedChatModel(responses=["x" * 10_000], delay=0.001)
    stream = stream_for(face, model, "hi")
    if face == "sync":
        with stream as s:
            for i, _ in enumerate(s.tokens()):
                if i == 3:
                    break
    else:

        async def go() -> None:
            async with stream as s:
                i = 0
                async for _ in s.tokens():
                    i += 1
                    if i == 4:
                        break

        asyncio.run(go())
    assert model.finished.wait(2)
    assert model.tokens_sent < 30
    assert stream.status == "cancelled"


def test_first_token_timeout_ignores_non_token_events(face: str) -> None:
    # F30: chain_start and llm_start arrive at once; the first token comes late.
    model = ScriptedChatModel(responses=["late"], ttft=3.0)
    chain = RunnableLambda(lambda x: x) | model
    got: list[Event] = []
    stream = stream_for(face, chain, "hi", first_token_timeout=0.8)  # room for the chain's start on a loaded machine
    t0 = time.monotonic()
    with pytest.raises(callstream.StreamTimeout) as info:
        drain_into(face, stream, got)
    assert info.value.limit == "first_token_timeout"
    assert 0.8 <= time.monotonic() - t0 < 2.0
    assert "llm_start" in [e.kind for e in got]
    assert model.finished.wait(6)  # the sync face's model sleeps out its ttft before it sees the cancel


def test_with_retry_and_fallbacks_make_no_new_call_after_cancel() -> None:
    primary = ScriptedChatModel(responses=["x" * 1000], delay=0.001)
    backup = ScriptedChatModel(responses=["backup"])
    chain = primary.with_retry(stop_after_attempt=3).with_fallbacks([backup])
    with callstream.iter_callbacks(chain, "hi") as s:
        for i, _ in enumerate(s.tokens()):
            if i == 2:
                break
    assert primary.finished.wait(2)
    wait_for_no_workers()  # the worker has ended: no retry nor fallback can start any more
    assert primary.calls == 1 and backup.calls == 0


# -- context, shared state, concurrency ------------------------------------------------------

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="none")


def test_contextvars_reach_tools_and_nested_invoke_without_config() -> None:
    seen: list[str] = []

    @tool
    def whoami(a: int) -> str:
        """Report the request id."""
        seen.append(REQUEST_ID.get())
        return REQUEST_ID.get()

    from langchain.agents import create_agent

    model = ScriptedChatModel(respond=agent_script(tool="whoami", args={"a": 1}, answer="id={result}"))
    agent = create_agent(model, tools=[whoami])
    inner = ScriptedChatModel(responses=["nested"])
    nested: RunnableLambda[Any, Any] = RunnableLambda(lambda x: inner.invoke(x))  # F38: no config passed on
    token = REQUEST_ID.set("req-42")
    try:
        text = "".join(callstream.iter_callbacks(agent, {"messages": [("user", "hi")]}).tokens())
        assert text == "id=req-42" and seen == ["req-42"]
        assert list(callstream.iter_callbacks(nested, "x").tokens()) == list("nested")
    finally:
        REQUEST_ID.reset(token)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.ends = 0

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends += 1


def test_user_callbacks_still_run_and_nothing_shared_is_mutated() -> None:
    # F39
    model = ScriptedChatModel(responses=["abc"])
    user = Recorder()
    config: RunnableConfig = {"callbacks": [user], "tags": ["mine"]}
    before = dict(config)
    assert list(callstream.iter_callbacks(model, "hi", config=config).tokens()) == ["a", "b", "c"]
    assert user.tokens[:3] == ["a", "b", "c"] and user.ends == 1
    assert config == before and config["callbacks"] == [user]
    assert model.callbacks is None and "streaming" not in model.model_fields_set
    plain = Recorder()
    model.invoke("again", config={"callbacks": [plain]})
    assert plain.tokens == []  # a plain invoke reaches no stale streaming handler


def test_callback_manager_in_config_is_copied() -> None:
    from langchain_core.callbacks import CallbackManager

    user = Recorder()
    manager = CallbackManager(handlers=[user])
    text = "".join(
        callstream.iter_callbacks(ScriptedChatModel(responses=["ok"]), "hi", {"callbacks": manager}).tokens()
    )
    assert text == "ok" and user.ends == 1
    assert manager.handlers == [user]


def test_parallel_models_tokens_grouped_by_run_in_order() -> None:
    # F40: two models in a RunnableParallel, interleaved.
    barrier = threading.Barrier(2, timeout=5)

    class Interleaved(ScriptedChatModel):
        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            for chunk in super()._stream(*args, **kwargs):
                barrier.wait()
                yield chunk

    par = RunnableParallel(left=Interleaved(responses=["abcd"]), right=Interleaved(responses=["wxyz"]))
    with callstream.iter_callbacks(par, "hi", sink="deque") as s:
        events = list(s)
    by_run: dict[str, str] = {}
    for e in events:
        if e.kind == "token":
            by_run[e.run_id] = by_run.get(e.run_id, "") + e.text
    assert sorted(by_run.values()) == ["abcd", "wxyz"]
    assert {k: v.content for k, v in s.output.items()} == {"left": "abcd", "right": "wxyz"}


def test_64_concurrent_streams_on_one_agent_never_mix() -> None:
    from langchain.agents import create_agent

    def respond(messages: list[BaseMessage]) -> Any:
        last_user = next(m for m in messages if m.type == "human")
        n = int(str(last_user.content))
        results = [m for m in messages if m.type == "tool"]
        if results:
            return f"answer-{n}-{results[-1].content}"
        return tool_call("add", {"a": n, "b": 1000})

    agent = create_agent(ScriptedChatModel(respond=respond), tools=[add])
    texts: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            texts[n] = "".join(callstream.iter_callbacks(agent, {"messages": [("user", str(n))]}).tokens())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert texts == {n: f"answer-{n}-{n + 1000}" for n in range(64)}


# -- cancellation reaching the producer (RELIABILITY C) -----------------------------------


def test_cancel_is_not_swallowed_by_user_except_exception() -> None:
    # F18: the cancel is a BaseException, so `except Exception` in user code,
    # .with_retry and .with_fallbacks do not turn it into a new call.
    inner = ScriptedChatModel(responses=["y" * 1000], delay=0.001)
    rescued: list[str] = []

    def careful(x: str) -> str:
        try:
            return str(inner.invoke(x).content)
        except Exception:
            rescued.append("swallowed")
            return "fallback"

    with callstream.iter_callbacks(RunnableLambda(careful), "hi") as s:
        for i, _ in enumerate(s.tokens()):
            if i == 2:
                break
    assert inner.finished.wait(2)
    assert rescued == [] and inner.calls == 1


def test_post_cancel_callbacks_do_not_block_on_a_full_sink() -> None:
    # F20: break while a BoundedSink(1) is full, in a 3-level nested chain; the
    # error callbacks that fire after the cancel must not wait for room.
    model = ScriptedChatModel(responses=["z" * 1000])
    chain = RunnableLambda(lambda x: x) | (RunnableLambda(lambda x: x) | (RunnableLambda(lambda x: x) | model))
    sink = callstream.BoundedSink(1)
    with callstream.iter_callbacks(chain, "hi", sink=sink) as s:
        for e in s:
            if e.kind == "token":
                break
    assert model.finished.wait(1)


def test_uninterruptible_tool_close_returns_at_once() -> None:
    # F21: a tool blocked outside any callback; close() and timeouts do not wait for it.
    release = threading.Event()
    entered = threading.Event()

    @tool
    def slow_tool(a: int) -> int:
        """Blocks until released."""
        entered.set()
        release.wait(10)
        return a

    from langchain.agents import create_agent

    agent = create_agent(
        ScriptedChatModel(respond=agent_script(tool="slow_tool", args={"a": 1}, answer="done")), tools=[slow_tool]
    )
    s = callstream.iter_callbacks(agent, {"messages": [("user", "go")]}, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(callstream.StreamTimeout):
        for _ in s:
            pass
    assert entered.is_set()
    assert time.monotonic() - t0 < 0.3  # raised at the deadline, not when the tool returns
    t1 = time.monotonic()
    s.close()
    assert time.monotonic() - t1 < 0.05
    release.set()  # the worker then ends at its next callback (checked by no_thread_leak)


def test_langsmith_style_tracer_in_config_is_not_displaced() -> None:
    from langchain_core.tracers.base import BaseTracer
    from langchain_core.tracers.schemas import Run

    class Tracer(BaseTracer):
        def __init__(self) -> None:
            super().__init__()
            self.roots: list[Run] = []

        def _persist_run(self, run: Run) -> None:
            self.roots.append(run)

    tracer = Tracer()
    chain = ChatPromptTemplate.from_template("{x}") | ScriptedChatModel(responses=["ok"]) | StrOutputParser()
    assert "".join(callstream.iter_callbacks(chain, {"x": 1}, {"callbacks": [tracer]}).tokens()) == "ok"
    assert len(tracer.roots) == 1
    root = tracer.roots[0]
    assert root.name == "RunnableSequence" and root.outputs == {"output": "ok"}
    assert [c.name for c in root.child_runs] == ["ChatPromptTemplate", "ScriptedChatModel", "StrOutputParser"]


# -- the async face: a task on the loop, or a thread for blocking sinks ---------------------


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("callstream-")]


@pytest.mark.parametrize(("sink", "threaded"), [("queue", False), ("deque", False), ("bounded", True)])
def test_aiter_callbacks_runs_on_the_loop_unless_the_sink_can_block(sink: SinkName, threaded: bool) -> None:
    model = ScriptedChatModel(responses=["abc"], delay=0.01)

    async def go() -> tuple[str, list[str]]:
        seen: list[str] = []
        text = ""
        async with callstream.aiter_callbacks(model, "hi", sink=sink) as s:
            async for t in s.tokens():
                seen += worker_threads()
                text += t
        return text, seen

    text, seen = asyncio.run(go())
    assert text == "abc"
    assert bool(seen) is threaded


def test_aiter_callbacks_runs_async_only_tools() -> None:
    from langchain.agents import create_agent

    @tool
    async def lookup(a: int) -> str:
        """An async-only tool."""
        await asyncio.sleep(0)
        return f"found {a}"

    agent = create_agent(
        ScriptedChatModel(respond=agent_script(tool="lookup", args={"a": 7}, answer="{result}")), tools=[lookup]
    )

    async def go() -> str:
        return "".join([t async for t in callstream.aiter_callbacks(agent, {"messages": [("user", "x")]}).tokens()])

    assert asyncio.run(go()) == "found 7"


def test_task_producer_cancelled_from_another_thread() -> None:
    model = ScriptedChatModel(responses=["x" * 5000], delay=0.001)

    async def go() -> None:
        stream = callstream.aiter_callbacks(model, "hi")
        await stream.__aenter__()
        await stream.__anext__()
        t = threading.Thread(target=stream.close)  # a finaliser elsewhere
        t.start()
        t.join()
        async for _ in stream:
            pass
        # The producer task processes its cancellation: wait until it (every other task) is done.
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)

    asyncio.run(go())
    assert model.finished.wait(2)
    assert model.tokens_sent < 100
