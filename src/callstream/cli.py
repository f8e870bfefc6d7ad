"""`python -m callstream demo`: stream a chain and a tool-using agent, live.

Then one human-in-the-loop round: an agent whose tool needs approval pauses
(`interrupt`), the decision is taken (automatically, or on stdin with
`--approve`), and the run resumes with `Command(resume=...)`.

By default all run on the embedded scripted model (no network, no API key).
`--base-url` and `--model` point them at any OpenAI-compatible server instead
(`OPENAI_API_KEY` is used when set; needs the `openai` extra). The agent part
needs the `agents` extra; without it the chain part runs and a line says so.

As a command-line tool should, it reports an error in one line on stderr and
exits non-zero: 1 for a failed run (an unreachable server, a model error, a
timeout), 2 for bad arguments, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._relay import MemoryRelay
from ._runnable import iter_callbacks
from ._stream import Stream
from .events import Event

__all__ = ("main",)

ANSWER = (
    "Callback APIs push tokens at you; web frameworks want to pull them. "
    "callstream sits in between: a worker thread runs the model, a sink carries "
    "the events, and your loop pulls them, with timeouts, cancellation and errors "
    "handled for you."
)


class _Failed(Exception):
    """A failure already worded for the user: `main` prints it as one line."""


def _models(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The chat models for the chain, the agent and the agent that asks for approval."""
    if args.base_url:
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            raise _Failed("--base-url needs the openai extra: pip install 'callstream[openai]'") from None

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


def _show(stream: Stream[Event], out: TextIO) -> None:
    """The demo's consumer: print tokens and tool calls as they come."""
    with stream:
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


def _consume(stream: Stream[Event], out: TextIO) -> None:
    """`_show(stream, out)` in a helper thread while this (main) thread waits for it.

    Ctrl-C raises KeyboardInterrupt in the main thread at an arbitrary point. Were
    the main thread the consumer, it could land just as a lock inside the sink
    was taken (the interpreter checks for signals between taking a lock and
    entering the `with` that releases it), leaving that lock held, and `close()`
    would then wait for it forever. Here it lands in the wait: the main thread
    closes the stream, which ends the consumer's loop and stops the run.
    """
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            _show(stream, out)
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)

    consumer = threading.Thread(target=consume, name="demo-consumer", daemon=True)
    consumer.start()
    try:
        consumer.join()
    except KeyboardInterrupt:
        stream.close()  # the model stops at its next callback; nothing waits for it
        raise
    if failure:
        raise failure[0]


def _run(title: str, runnable: Any, inputs: Any, out: TextIO, timeout: float, config: Any = None) -> Stream[Event]:
    out.write(f"\n\033[1m== {title} ==\033[0m\n")
    stream = iter_callbacks(runnable, inputs, config, timeout=timeout)
    _consume(stream, out)
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


def _resume_round(runnable: Any, inputs: Any, out: TextIO, timeout: float) -> None:
    """A run published on a relay: the first subscription drops halfway, a second resumes by id."""
    out.write("\n\033[1m== resumable: the same chain, published; the connection drops halfway ==\033[0m\n")
    relay = MemoryRelay()
    key = relay.publish(iter_callbacks(runnable, inputs, timeout=timeout))
    last_id = ""
    seen = 0
    with relay.subscribe(key) as first:
        for event in first:
            last_id = event.id
            if event.kind == "token" and event.text:
                out.write(event.text)
                out.flush()
                seen += 1
                if seen == 8:
                    break  # the client's connection drops here; the run goes on
    out.write(
        f"\n  \033[33m⇣ connection dropped after event {last_id}; reconnecting with Last-Event-ID: {last_id}\033[0m\n"
    )
    with relay.subscribe(key, after=last_id) as second:
        for token in second.tokens():
            out.write(token)
            out.flush()
    with relay.subscribe(key) as watcher:
        whole = "".join(watcher.tokens())
    same = first.text + second.text == whole
    out.write(
        f"\n\033[2m[resumed: {'nothing repeated, nothing skipped' if same else 'MISMATCH'} · "
        f"{len(whole)} characters · run {relay.status(key)}]\033[0m\n"
    )


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


AGENTS_MISSING = "(the agent part of the demo needs the agents extra: pip install 'callstream[agents]')"


def demo(args: argparse.Namespace, out: TextIO = sys.stdout, ask: Callable[[str], str] = input) -> int:
    """Run the demo, writing to `out`: the chain, then, if the `agents` extra is installed, the agent
    and the approval round (`ask` reads the decision when `--approve` is given)."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.tools import tool

    try:
        from langchain.agents import create_agent
    except ImportError:  # the agents extra is not installed: the chain part still runs
        have_agents = False
    else:
        have_agents = True

    @tool
    def get_weather(city: str) -> str:
        """Return the current weather for a city."""
        return "18°C and sunny"

    chain_model, agent_model, mail_model = _models(args)
    chain = ChatPromptTemplate.from_template("Explain {topic} in three sentences.") | chain_model | StrOutputParser()
    _run("chain: prompt | model | parser", chain, {"topic": "callstream"}, out, args.timeout)
    _resume_round(chain, {"topic": "callstream"}, out, args.timeout)
    if not have_agents:
        out.write(f"\n{AGENTS_MISSING}\n")
        return 0
    agent = create_agent(agent_model, tools=[get_weather])
    question = {"messages": [("user", "What's the weather in Paris?")]}
    _run("agent: create_agent with a tool", agent, question, out, args.timeout)
    mail = {"messages": [("user", "Email the team the weather in Paris.")]}
    _approval_round(args, out, ask, mail_model, mail)
    return 0


def _one_line(exc: BaseException, base_url: str | None) -> str:
    """`exc` as the one line a command-line user needs (no traceback, no notes)."""
    if isinstance(exc, _Failed):
        return str(exc)
    kinds = {cls.__name__ for cls in type(exc).__mro__}  # the openai SDK's errors, without importing it
    text = _first_line(exc)
    if base_url and "APIConnectionError" in kinds:  # refused, unknown host, timed out...
        return f"cannot reach the model server at {base_url}: {_root_cause(exc)}"
    if base_url and "APIStatusError" in kinds:
        return f"the model server at {base_url} answered: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost explained cause: the SDK's "Connection error." wraps httpx's "[Errno 111] Connection refused"."""
    text = _first_line(exc)
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
        text = _first_line(exc) or text
    return text


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _end_line() -> None:
    """End the demo's partial line on stdout, so that the message on stderr starts a line."""
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed (a pipe whose reader left)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """The `callstream` command: returns the exit status (0, 1 on a failed run, 130 on Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _end_line()
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="callstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="stream a chain and a tool-using agent in the terminal")
    p.add_argument("--base-url", help="an OpenAI-compatible server (default: the embedded scripted model)")
    p.add_argument("--model", default="gpt-4o-mini", help="model name for --base-url (default: %(default)s)")
    p.add_argument("--delay", type=float, default=0.03, help="scripted model: seconds between tokens")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each run")
    p.add_argument("--approve", action="store_true", help="ask on stdin whether to approve the tool call")
    args = parser.parse_args(argv)
    try:
        return demo(args)
    except Exception as exc:  # a failed run: one line, not a traceback
        _end_line()
        print(f"error: {_one_line(exc, args.base_url)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
