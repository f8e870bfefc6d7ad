"""Test support that ships with callstream.

- `ScriptedChatModel` / `ScriptedLLM`: deterministic LangChain models (tokens,
  pacing, failures, tool calls) for your own tests and for the demo;
  `agent_script` and `tool_call` script tool-using agents.
- `check_sink(make_sink)` runs the sink conformance checks against any `Sink`
  implementation (the built-in ones are checked with it too), in the spirit of
  `trio.testing.check_one_way_stream`.
- `OpenAIServer`: a local OpenAI-compatible chat-completions server (standard
  library only) for tests over real HTTP; `python -m callstream.testing.openai_server`
  serves one from the command line.
"""

from __future__ import annotations

from ._models import ScriptedChatModel as ScriptedChatModel
from ._models import ScriptedLLM as ScriptedLLM
from ._models import agent_script as agent_script
from ._models import tool_call as tool_call
from ._server import OpenAIServer as OpenAIServer
from ._sinks import check_sink as check_sink

__all__ = ("OpenAIServer", "ScriptedChatModel", "ScriptedLLM", "agent_script", "check_sink", "tool_call")

# Reprs and docs say `callstream.testing.ScriptedChatModel`, not `callstream.testing._models...`.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
