"""`make demo`: the scripted run, and the same demo pointed at an OpenAI-compatible server."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

from callstream.cli import ANSWER, demo, main
from callstream.testing import OpenAIServer


class Args:
    base_url: str | None = None
    model = "gpt-4o-mini"
    delay = 0.0
    timeout = 30.0


def test_demo_on_scripted_model_streams_chain_and_agent() -> None:
    out = io.StringIO()
    assert demo(Args(), out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert ANSWER in text
    assert '→ get_weather({"city": "Paris"})' in text and "← get_weather: 18°C and sunny" in text
    assert "It is 18°C and sunny in Paris" in text
    assert text.count("status completed") == 2 and "first token after" in text


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


def test_cli_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callstream", "demo", "--delay", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "status completed" in proc.stdout
    assert main.__module__ == "callstream.cli"
