"""Section `answer_only`: the latency answer-only streaming adds to the first answer token."""

from __future__ import annotations

import statistics
import time
from typing import Any

import callstream
from benchmarks.harness import Rows
from callstream.testing import ScriptedChatModel


def answer_only(repeats: int) -> list[dict[str, Any]]:
    """The latency answer-only streaming adds to the first answer token."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from callstream.testing import agent_script

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rows: Rows = []
    for holdback in (0, 40, 80, 160):
        plain: list[float] = []
        answer: list[float] = []
        for _ in range(repeats):
            model = ScriptedChatModel(
                respond=agent_script(tool="add", args={"a": 1, "b": 2}, answer="The sum is {result}. " * 20),
                chunk_size=4,
                delay=0.01,  # 100 chunks/s, 4 characters each
            )
            agent = create_agent(model, tools=[add])
            inputs = {"messages": [("user", "1+2?")]}
            for out, kw in ((plain, {}), (answer, {"answer_only": True, "holdback": holdback})):
                t0 = time.monotonic()
                tokens = callstream.iter_callbacks(agent, inputs).tokens(**kw)  # type: ignore[arg-type]
                next(iter(tokens))
                out.append(time.monotonic() - t0)
                tokens.close()
        rows.append(
            {
                "row": f"answer_only, holdback={holdback} chars",
                "first_token_ms_all_tokens": statistics.median(plain) * 1e3,
                "first_answer_token_ms": statistics.median(answer) * 1e3,
                "note": "both wait for the answer call (the tool call has no text); the difference is the holdback",
            }
        )
    return rows


def run(quick: bool) -> Rows:
    return answer_only(1 if quick else 5)
