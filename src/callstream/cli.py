"""`python -m callstream demo`: stream a chain and a tool-using agent, live.

Then one human-in-the-loop round: an agent whose tool needs approval pauses
(`interrupt`), the decision is taken (automatically, or on stdin with
`--approve`), and the run resumes with `Command(resume=...)`.

By default all run on the embedded scripted model (no network, no API key).
`--base-url` and `--model` point them at any OpenAI-compatible server instead
(`OPENAI_API_KEY` is used when set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._runnable import iter_callbacks

__all__ = ("main",)

ANSWER = (
    "Callback APIs push tokens at you; web frameworks want to pull them. "
    "callstream sits in between: a worker thread runs the model, a sink carries "
    "the events, and your loop pulls them, with timeouts, cancellation and errors "
    "handled for you."
)


def _models(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The chat models for the chain, the agent and the agent that asks for approval."""
    if args.base_url:
        from langchain_openai import ChatOpenAI

        key = os.environ.get("OPENAI_API_KEY", "not-needed")
        chat = ChatOpenAI(base_url=args.base_url, model=args.model, api_key=key)  # type: ignore[arg-type]
        return chat, chat, chat
    from .testing import ScriptedChatModel, agent_script

    chain_model = ScriptedChatModel(responses=[ANSWER], chunk_size=4, ttft=0.15, delay=args.delay)
    agent_model = ScriptedChatModel(
        respond=agent_script(
            tool="get_weather",
            args={"city": "Paris"},
            preamble="Let me check. ",
            answer="It is {result} in Paris right now: a fine day for a walk along the Seine.",
        ),
        chunk_size=3,
        ttft=0.15,
        delay=args.delay,
    )
    mail_model = ScriptedChatModel(
        respond=agent_script(
            tool="send_email",
            args={"to": "team@example.com", "subject": "Weather in Paris"},
            preamble="I'll email the team. ",
            answer="{result}.",
        ),
        chunk_size=3,
        ttft=0.15,
        delay=args.delay,
    )
    return chain_model, agent_model, mail_model


def _run(title: str, runnable: Any, inputs: Any, out: TextIO, timeout: float, config: Any = None) -> Any:
    out.write(f"\n\033[1m== {title} ==\033[0m\n")
    with iter_callbacks(runnable, inputs, config, timeout=timeout) as stream:
        for event in stream:
            if event.kind == "token" and event.text:
                out.write(event.text)
            elif event.kind == "tool_start":
                args = event.data.get("input")
                out.write(f"\n  \033[36m→ {event.name}({json.dumps(args, default=str)})\033[0m\n")
            elif event.kind == "tool_end":
                output = getattr(event.data.get("output"), "content", event.data.get("output"))
                out.write(f"  \033[36m← {event.name}: {output}\033[0m\n")
            elif event.kind == "custom":
                out.write(f"  \033[2m· {event.name}: {json.dumps(event.data, default=str)}\033[0m\n")
            elif event.kind == "interrupt":
                for asked in event.data["interrupts"]:
                    for action in asked["value"].get("action_requests", []):
                        call = f"{action['name']}({json.dumps(action['args'], default=str)})"
                        out.write(f"\n  \033[33m⏸ paused: {call} needs approval\033[0m\n")
            out.flush()
    s = stream.summary
    tools = ", ".join(
        f"{t.name} → {getattr(t.result, 'content', t.result) if t.error is None else t.error}" for t in s.tool_calls
    )
    tools = tools or "none"
    out.write(
        f"\n\033[2m[status {s.status} · {s.tokens} tokens from {s.llm_calls} LLM call(s) · "
        f"first token after {s.time_to_first_token or 0:.3f} s · {s.tokens_per_second or 0:.0f} tokens/s · "
        f"longest gap {s.longest_gap or 0:.3f} s · peak sink depth {s.peak_sink_depth} · "
        f"{s.duration:.2f} s in all · tool calls: {tools}]\033[0m\n"
    )
    return stream


def _decide(args: argparse.Namespace, out: TextIO, ask: Callable[[str], str]) -> dict[str, Any]:
    """The reviewer's decision: approved, unless `--approve` asks and the answer is not yes."""
    if not args.approve:
        out.write("  \033[33m✔ auto-approved (run with --approve to decide yourself)\033[0m\n")
        return {"type": "approve"}
    try:
        answer = ask("  Approve? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return {"type": "approve"}
    return {"type": "reject", "message": "declined in the terminal"}


def _approval_round(
    args: argparse.Namespace, out: TextIO, ask: Callable[[str], str], model: Any, question: Any
) -> None:
    """An agent whose tool needs a person's approval: the run pauses, then resumes."""
    from langchain.agents import create_agent
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.config import get_stream_writer
    from langgraph.types import Command

    @tool
    def send_email(to: str, subject: str) -> str:
        """Send an email."""
        write = get_stream_writer()  # progress, streamed as `custom` events
        write({"progress": "connecting to the mail server"})
        write({"progress": "sent"})
        return f"email to {to} sent"

    hitl = HumanInTheLoopMiddleware(interrupt_on={"send_email": True})
    agent = create_agent(model, tools=[send_email], middleware=[hitl], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "demo"}}
    stream = _run(
        "agent with human approval: a tool call waits for a person", agent, question, out, args.timeout, config
    )
    if stream.status != "interrupted":  # pragma: no cover - the model called no tool
        return
    decision = _decide(args, out, ask)
    resume: Any = Command(resume={"decisions": [decision]})
    _run(f"resumed with Command(resume=...): {decision['type']}", agent, resume, out, args.timeout, config)


def demo(args: argparse.Namespace, out: TextIO = sys.stdout, ask: Callable[[str], str] = input) -> int:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.tools import tool

    try:
        from langchain.agents import create_agent
    except ImportError:  # pragma: no cover - the demo extra is missing
        out.write("The agent demo needs `pip install 'callstream[agents]'`.\n")
        return 1

    @tool
    def get_weather(city: str) -> str:
        """Return the current weather for a city."""
        return "18°C and sunny"

    chain_model, agent_model, mail_model = _models(args)
    chain = ChatPromptTemplate.from_template("Explain {topic} in three sentences.") | chain_model | StrOutputParser()
    _run("chain: prompt | model | parser", chain, {"topic": "callstream"}, out, args.timeout)
    agent = create_agent(agent_model, tools=[get_weather])
    question = {"messages": [("user", "What's the weather in Paris?")]}
    _run("agent: create_agent with a tool", agent, question, out, args.timeout)
    mail = {"messages": [("user", "Email the team the weather in Paris.")]}
    _approval_round(args, out, ask, mail_model, mail)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="stream a chain and a tool-using agent in the terminal")
    p.add_argument("--base-url", help="an OpenAI-compatible server (default: the embedded scripted model)")
    p.add_argument("--model", default="gpt-4o-mini", help="model name for --base-url (default: %(default)s)")
    p.add_argument("--delay", type=float, default=0.03, help="scripted model: seconds between tokens")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each run")
    p.add_argument("--approve", action="store_true", help="ask on stdin whether to approve the tool call")
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
