"""`callstream.testing`: scripted models' errors, and the OpenAI-compatible server as users run it."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import openai
import pytest

import callstream
import callstream.testing
from callstream.testing import OpenAIServer, ScriptedChatModel, ScriptedLLM

TESTING = Path(callstream.testing.__file__).parent


def _fail(model: ScriptedChatModel | ScriptedLLM) -> BaseException:
    with pytest.raises(BaseException) as info:  # the type is checked by the callers
        for _ in callstream.iter_callbacks(model, "hi").tokens():
            pass
    return info.value


@pytest.mark.parametrize("kind", ["chat", "llm"])
def test_scripted_error_is_a_fresh_copy_each_run(kind: str) -> None:
    error = ValueError("model crashed", 42)
    error.add_note("set by the test")
    model: ScriptedChatModel | ScriptedLLM
    if kind == "chat":
        model = ScriptedChatModel(responses=["abcdef"], fail_after=3, error=error)
    else:
        model = ScriptedLLM(responses=["abcdef"], fail_after=3, error=error)
    raised = [_fail(model) for _ in range(3)]
    assert [type(e) for e in raised] == [ValueError] * 3
    assert all(e.args == ("model crashed", 42) for e in raised)
    assert len({id(e) for e in raised}) == 3 and error not in raised
    assert raised[-1] is model.last_error
    # Nothing piles up: every run's exception carries the same notes and as many frames.
    assert [e.__notes__ for e in raised] == [raised[0].__notes__] * 3
    assert raised[0].__notes__[0] == "set by the test"
    frames = [len(traceback.extract_tb(e.__traceback__)) for e in raised]
    assert frames == [frames[0]] * 3
    # The object the test passed in is left as it was.
    assert error.__notes__ == ["set by the test"] and error.__traceback__ is None


class _NeedsKeywords(Exception):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def test_scripted_error_that_cannot_be_rebuilt_is_raised_itself() -> None:
    error = _NeedsKeywords("teapot", status=418)
    model = ScriptedChatModel(responses=["abcdef"], fail_after=1, error=error)
    assert _fail(model) is error is model.last_error


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", ["_sinks.py", "_server.py", "openai_server.py"])
def test_sink_checks_and_server_need_only_the_standard_library(module: str) -> None:
    assert _imports(TESTING / module) <= set(sys.stdlib_module_names)


def test_server_defaults_and_bad_option() -> None:
    server = OpenAIServer(tokens=3, prefix="p").start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        out = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "p0 p1 p2 "
        out = client.chat.completions.create(model="scripted:tokens=1", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "p0 "  # the model name wins over the server's defaults
    finally:
        server.stop()
    with pytest.raises(ValueError, match="unknown option"):
        OpenAIServer(token=3)


# `python -m callstream.testing.openai_server ARGS`, in a child whose SIGINT raises KeyboardInterrupt
# even when this test run ignores SIGINT (as a background job does, and a child inherits that).
RUN_SERVER = """
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "openai_server"
runpy.run_module("callstream.testing.openai_server", run_name="__main__", alter_sys=True)
"""


def test_server_from_the_command_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SERVER, "--port", "0", "--tokens", "4", "--delay-ms", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()  # printed once it listens
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), base_url
        client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
        stream = client.chat.completions.create(
            model="scripted:prefix=x", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "x0 x1 x2 x3 "
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
