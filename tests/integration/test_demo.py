"""`make demo`: the scripted run, and the same demo pointed at an OpenAI-compatible server."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest

from callstream.cli import ANSWER, demo, main
from tests.openai_server import OpenAIServer


class Args:
    base_url: str | None = None
    model = "gpt-4o-mini"
    delay = 0.0
    timeout = 30.0
    approve = False


def test_demo_on_scripted_model_streams_chain_and_agent() -> None:
    out = io.StringIO()
    assert demo(Args(), out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert ANSWER in text
    assert '→ get_weather({"city": "Paris"})' in text and "← get_weather: 18°C and sunny" in text
    assert "It is 18°C and sunny in Paris" in text
    assert text.count("status completed") == 3 and "first token after" in text
    # one approval round: the agent pauses before its tool runs, is approved, and resumes
    paused = text.index('⏸ paused: send_email({"to": "team@example.com", "subject": "Weather in Paris"})')
    assert text.index("status interrupted") > paused and "auto-approved" in text
    resumed = text.index("resumed with Command(resume=...): approve")
    assert resumed < text.index('· send_email: {"progress": "sent"}') < text.index("email to team@example.com sent.")


@pytest.mark.parametrize(("answer", "ran"), [("y\n", True), ("n\n", False), ("", False)])
def test_demo_approve_asks_on_stdin(answer: str, ran: bool) -> None:
    args = Args()
    args.approve = True
    asked: list[str] = []
    replies = io.StringIO(answer)

    def ask(prompt: str) -> str:
        asked.append(prompt)
        line = replies.readline()
        if not line:
            raise EOFError
        return line

    out = io.StringIO()
    assert demo(args, out, ask) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert asked == ["  Approve? [y/N] "]
    assert ("→ send_email" in text) is ran and ("email to team@example.com sent." in text) is ran
    if not ran:
        assert "resumed with Command(resume=...): reject" in text and "declined in the terminal" in text


def test_demo_against_openai_compatible_server(openai_server: OpenAIServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = Args()
    args.base_url = openai_server.base_url
    args.model = "scripted:tokens=6,tag=demo"
    out = io.StringIO()
    assert demo(args, out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert "w0 w1 w2 w3 w4 w5" in text
    assert "→ get_weather" in text and "The answer is 18°C and sunny." in text
    # the approval round over HTTP: the server's tool call, approved, then its answer
    assert "⏸ paused: send_email" in text and "The answer is email to otters sent." in text


def test_cli_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callstream", "demo", "--delay", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "status completed" in proc.stdout and "status interrupted" in proc.stdout


def test_cli_approve_reads_the_decision_from_stdin() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callstream", "demo", "--delay", "0", "--approve"],
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Approve? [y/N]" in proc.stdout and "resumed with Command(resume=...): approve" in proc.stdout
    assert main.__module__ == "callstream.cli"
