"""`make demo`: the scripted run, the same demo pointed at an OpenAI-compatible server, and the CLI's failures."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from callstream.cli import AGENTS_MISSING, ANSWER, demo, main
from callstream.testing import OpenAIServer


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
    dropped = text.index("⇣ connection dropped after event")
    assert "reconnecting with Last-Event-ID" in text and "[resumed: nothing repeated, nothing skipped" in text
    assert text.count(ANSWER[-40:]) == 2 and text.index(ANSWER[-40:], dropped) > dropped  # the rest, after the drop
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
    assert main.__module__ == "callstream.cli"


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


# -- the command as a user runs it: real subprocesses ---------------------------------------------

# `python -m callstream ARGS`, in a child whose SIGINT raises KeyboardInterrupt even when this run
# of the tests ignores SIGINT (a background job does, and a child inherits that): it is what a
# terminal's Ctrl-C does. `hide` lists packages to make unimportable, as if not installed.
RUN_CLI = """
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None  # `import name` now raises ImportError
sys.argv = ["callstream", *sys.argv[2:]]
runpy.run_module("callstream", run_name="__main__", alter_sys=True)
"""


def cli(*args: str, hide: str = "") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": "sk-test"}
    cmd = [sys.executable, "-c", RUN_CLI, hide, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 30.0) -> bytes:
    """What the child printed, up to and including `marker` (read as it comes, no sleeps)."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    seen = b""
    while marker not in seen:
        assert time.monotonic() < end, f"no {marker!r} in {seen!r}"
        data = os.read(proc.stdout.fileno(), 4096)
        assert data, f"the demo ended before printing {marker!r}: {seen!r}"
        seen += data
    return seen


@pytest.mark.parametrize("model", ["scripted", "server"])
def test_ctrl_c_prints_one_line_and_exits_130(model: str, openai_server: OpenAIServer) -> None:
    # Either run would take minutes: the interrupt, sent once the first token is on screen,
    # always lands mid-stream.
    if model == "scripted":
        proc, first = cli("demo", "--delay", "5"), ANSWER[:4].encode()
    else:
        spec = "scripted:tokens=100000,delay_ms=5,tag=ctrl-c"
        proc, first = cli("demo", "--base-url", openai_server.base_url, "--model", spec), b"w0 "
    try:
        seen = read_until(proc, first)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 130
    assert err.decode() == "interrupted\n"  # one line, no traceback
    assert b"status completed" not in seen + out
    if model == "server":  # and the model's HTTP request was closed
        row = openai_server.wait_ended("ctrl-c", timeout=10)[0]
        assert row["sent"] < 100000 and not row["done"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_base_url_prints_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    proc = cli("demo", "--base-url", url, "--timeout", "15")
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 1
    lines = err.decode().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith(f"error: cannot reach the model server at {url}: ") and "refused" in lines[0]


def test_server_error_prints_one_line(openai_server: OpenAIServer) -> None:
    proc = cli("demo", "--base-url", openai_server.base_url, "--model", "scripted:status=401")
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 1
    assert (
        err.decode()
        == f"error: the model server at {openai_server.base_url} answered: Error code: 401 - scripted 401\n"
    )


def test_without_the_agents_extra_the_chain_part_runs() -> None:
    proc = cli("demo", "--delay", "0", hide="langchain,langgraph")
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert ANSWER in text and text.count("status completed") == 1
    assert "== agent" not in text
    assert text.rstrip().endswith(AGENTS_MISSING) and "callstream[agents]" in AGENTS_MISSING


def test_base_url_without_the_openai_extra_says_what_to_install() -> None:
    proc = cli("demo", "--base-url", "http://127.0.0.1:1/v1", hide="langchain_openai")
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 1
    assert err.decode() == "error: --base-url needs the openai extra: pip install 'callstream[openai]'\n"
