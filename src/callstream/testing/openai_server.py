"""`python -m callstream.testing.openai_server`: a local OpenAI-compatible server for tests.

Prints its base URL (`http://127.0.0.1:PORT/v1`) once it listens, then serves
until interrupted. Options: `--host`, `--port` (0, the default, picks a free
one), and the defaults of the scripted answers: `--tokens`, `--prefix`,
`--delay-ms`, `--ttft-ms`, `--fail-after`, `--status` (each request's model
name can still override them, e.g. `scripted:tokens=5,delay_ms=20`). In
Python, use `callstream.testing.OpenAIServer`.
"""

from __future__ import annotations

import sys

from ._server import OPTIONS as OPTIONS
from ._server import OpenAIServer as OpenAIServer
from ._server import main as main

__all__ = ("OPTIONS", "OpenAIServer", "main")

if __name__ == "__main__":
    sys.exit(main())
