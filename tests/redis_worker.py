"""The other process of the RedisRelay tests: `python -m tests.redis_worker MODE URL PREFIX KEY [LEASE]`.

Modes:
    agent       run the scripted one-tool agent under KEY (a worker's task body)
    tokens      run a producer that emits a token every 2 ms until it is stopped
    subscribe   read KEY: its events, answer-only tokens, summary and output

Each report is one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import callstream
from callstream.redis import RedisRelay


def say(**report: Any) -> None:
    print(json.dumps(report, default=str), flush=True)


def agent() -> Any:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from callstream.testing import ScriptedChatModel, agent_script

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": 2, "b": 3}, answer="It is {result}.", preamble="Let me add. "),
        chunk_size=2,
    )
    return create_agent(model, tools=[add])


def main() -> None:
    mode, url, prefix, key = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    relay = RedisRelay(url, prefix=prefix, lease=lease)
    if mode == "agent":
        summary = relay.run(callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]}), key=key)
        say(status=summary.status, tokens=summary.tokens)
    elif mode == "tokens":
        stopped = {"at": 0.0, "count": 0}
        ended = threading.Event()

        def producer(emit: Any) -> str:
            say(started=True)
            try:
                for i in range(100_000):
                    emit(f"t{i}")
                    stopped["count"] = i + 1
                    time.sleep(0.002)
            finally:
                stopped["at"] = time.monotonic()
                ended.set()
            return "done"

        summary = relay.run(callstream.from_callback(producer), key=key)
        ended.wait(5)  # a cancelled run returns at once; its producer stops at its next emit
        say(status=summary.status, stopped_at=stopped["at"], count=stopped["count"])
    elif mode == "subscribe":
        with relay.subscribe(key) as sub:
            events = [{"id": e.id, "kind": e.kind, "text": e.text} for e in sub]
        with relay.subscribe(key) as sub:
            answer = "".join(sub.tokens(answer_only=True))
        summary = sub.summary
        say(
            events=events,
            answer=answer,
            status=sub.status,
            tool_calls=[[c.name, c.args, getattr(c.result, "content", c.result)] for c in summary.tool_calls],
            usage=summary.usage,
            llm_calls=summary.llm_calls,
            last=sub.output["messages"][-1].content,
        )
    relay.close()


if __name__ == "__main__":
    main()
