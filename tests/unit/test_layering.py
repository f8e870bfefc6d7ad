"""The layers stay apart: a generic core under the LangChain part, sinks that never look inside items."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import callstream

SRC = Path(callstream.__file__).parent

# Everything `from_callback` / `from_push` and the sinks need: no LangChain (LangChain is one producer among others).
GENERIC = [
    "errors.py",
    "events.py",
    "sinks.py",
    "_core.py",
    "_worker.py",
    "_face.py",
    "_stream.py",
    "_astream.py",
    "_answer.py",
    "_summary.py",
    "_push.py",
    "testing/_sinks.py",
]


def imports(path: Path) -> set[str]:
    """`module` and `module.name` for every import of `path` (relative ones as `.module`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", GENERIC)
def test_generic_modules_do_not_import_langchain(module: str) -> None:
    assert not {name for name in imports(SRC / module) if "langchain" in name or "langgraph" in name}


def test_sinks_never_look_inside_items() -> None:
    # Token items are judged by events.token_text / merge_tokens, through BoundedSink's hooks.
    assert not {name for name in imports(SRC / "sinks.py") if name.endswith(".Event")}
    assert "._merge(" not in (SRC / "sinks.py").read_text()  # Event's private merge is gone


def test_the_core_starts_nothing() -> None:
    # Threads, tasks and the at-exit registry are the worker's (_worker.py).
    found = imports(SRC / "_core.py")
    assert not found & {"atexit", "contextvars", "weakref"}
    assert "Thread(" not in (SRC / "_core.py").read_text() and "create_task" not in (SRC / "_core.py").read_text()
