"""Events, values and outcomes as JSON, for relays that cross processes.

Only JSON crosses the wire: nothing read back is imported, unpickled or
executed. Plain JSON values (None, bool, int, float, str, lists, dicts with
str keys) come back equal. Other values are written as a tagged object
(`{"$cs": tag, ...}`) and rebuilt from a fixed list of types: LangChain
messages and message chunks (content, tool calls, tool-call chunks, usage),
generations, documents, LangGraph interrupts, tuples, bytes; an exception
comes back as `callstream.RemoteError(type, message)`. Anything else comes
back as its `str()` (a pydantic model or a dataclass: as a dict of its fields).

An event is a JSON object with short keys (`k` kind, `n` name, `r` run id,
`p` parent ids, `g` tags, `m` metadata, `d` data, `t` text, `c` chunk, `y`
run type), empty fields left out. A token's `data` is `{"chunk": chunk}`:
the chunk is written once (`"cd": 1`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID

from langchain_core.documents import Document
from langchain_core.messages import AIMessageChunk, BaseMessage, messages_from_dict
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from ._relay_store import Outcome
from ._summary import Summary, ToolCall
from .errors import ProducerLost, RemoteError, StreamTimeout
from .events import Event

__all__ = ("dump_event", "dump_outcome", "error_text", "load_event", "load_outcome")

TAG: Final = "$cs"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads
_new = tuple.__new__
_EMPTY: Mapping[str, Any] = MappingProxyType({})

#: the AIMessageChunk fields a token carries, written when not empty
_CHUNK_FIELDS: Final = (
    "content",
    "id",
    "name",
    "tool_call_chunks",
    "usage_metadata",
    "response_metadata",
    "additional_kwargs",
    "chunk_position",
)
_GENERATIONS: Final[dict[str, type[Generation]]] = {
    "Generation": Generation,
    "GenerationChunk": GenerationChunk,
    "ChatGeneration": ChatGeneration,
    "ChatGenerationChunk": ChatGenerationChunk,
}


# -- values ---------------------------------------------------------------------------


def dump_value(value: Any) -> Any:
    """`value` as a JSON-able structure (see the module's docstring)."""
    t = type(value)
    if value is None or t is str or t is int or t is bool or t is float:
        return value
    if t is list:
        return [dump_value(v) for v in value]
    if t is dict or isinstance(value, Mapping):
        if TAG not in value and all(type(k) is str for k in value):
            return {k: dump_value(v) for k, v in value.items()}
        return {TAG: "map", "v": [[dump_value(k), dump_value(v)] for k, v in value.items()]}
    if t is tuple:
        return {TAG: "tuple", "v": [dump_value(v) for v in value]}
    if t is AIMessageChunk:
        fields = {name: getattr(value, name) for name in _CHUNK_FIELDS}
        return {TAG: "aic", **{k: dump_value(v) for k, v in fields.items() if v or k == "content"}}
    if isinstance(value, BaseMessage):
        return {TAG: "msg", "type": value.type, "data": dump_value(value.model_dump())}
    if isinstance(value, BaseException):
        return {TAG: "error", **_dump_error(value)}
    if isinstance(value, Generation):
        out = {TAG: "gen", "cls": type(value).__name__, "text": value.text}
        if value.generation_info:
            out["info"] = dump_value(value.generation_info)
        message = getattr(value, "message", None)
        if message is not None:
            out["message"] = dump_value(message)
        return out
    if isinstance(value, Document):
        return {TAG: "doc", "page_content": value.page_content, "metadata": dump_value(value.metadata), "id": value.id}
    if _is_interrupt(value):
        out = {TAG: "interrupt", "value": dump_value(value.value), "id": value.id}
        schema = getattr(value, "response_schema", None)
        if isinstance(schema, dict):
            out["schema"] = dump_value(schema)
        return out
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, set, frozenset)):
        return [dump_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {TAG: "bytes", "v": base64.b64encode(value).decode()}
    if isinstance(value, (UUID,)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model: its fields
        try:
            return dump_value(dump())
        except Exception:
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump_value(getattr(value, f.name, None)) for f in dataclasses.fields(value)}
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__qualname__}>"


def load_value(value: Any) -> Any:
    """A value written by `dump_value`, rebuilt."""
    t = type(value)
    if t is list:
        return [load_value(v) for v in value]
    if t is not dict:
        return value
    tag = value.get(TAG)
    if tag is None:
        return {k: load_value(v) for k, v in value.items()}
    if tag == "aic":
        return AIMessageChunk(**{k: load_value(v) for k, v in value.items() if k != TAG})
    if tag == "msg":
        return messages_from_dict([{"type": value["type"], "data": load_value(value["data"])}])[0]
    if tag == "tuple":
        return tuple(load_value(v) for v in value["v"])
    if tag == "map":
        out = {}
        for k, v in value["v"]:
            k = load_value(k)
            try:
                out[k] = load_value(v)
            except TypeError:  # a key that is not hashable once rebuilt (a list)
                out[str(k)] = load_value(v)
        return out
    if tag == "error":
        return load_error(value)
    if tag == "gen":
        cls = _GENERATIONS.get(value.get("cls", ""), Generation)
        info = load_value(value.get("info"))
        if "message" in value and issubclass(cls, ChatGeneration):
            return cls(message=load_value(value["message"]), generation_info=info)
        return cls(text=value.get("text", ""), generation_info=info)
    if tag == "doc":
        return Document(page_content=value["page_content"], metadata=load_value(value["metadata"]), id=value.get("id"))
    if tag == "interrupt":
        interrupt = _interrupt_type()
        payload = load_value(value["value"])
        if interrupt is None:
            return {"value": payload, "id": value.get("id")}
        schema = value.get("schema")
        if schema is not None:
            return interrupt(payload, value["id"], response_schema=load_value(schema))
        return interrupt(payload, value["id"])
    if tag == "bytes":
        return base64.b64decode(value["v"])
    return {k: load_value(v) for k, v in value.items()}  # an unknown tag: the object as it is


def _is_interrupt(value: Any) -> bool:
    t = type(value)
    return t.__name__ == "Interrupt" and t.__module__.startswith("langgraph")


def _interrupt_type() -> Any:
    if sys.modules.get("langgraph") is None:  # not loaded (or blocked): not imported for a value
        try:
            from langgraph.types import Interrupt
        except ImportError:
            return None
        return Interrupt
    from langgraph.types import Interrupt

    return Interrupt


# -- errors -----------------------------------------------------------------------------


def error_text(error: BaseException) -> str:
    """How an error is named in an `attempt` event: `"ValueError: message"`."""
    return f"{type(error).__name__}: {error}"


def _dump_error(error: BaseException) -> dict[str, Any]:
    if isinstance(error, RemoteError):  # crossed once already: keep the original type
        return {"type": error.type, "message": error.message}
    out: dict[str, Any] = {"type": type(error).__qualname__, "message": str(error)}
    if isinstance(error, StreamTimeout):
        out["limit"], out["seconds"] = error.limit, error.seconds
    return out


def load_error(data: Mapping[str, Any]) -> BaseException:
    """An error as written: callstream's own time limits and lost producers as themselves, others as `RemoteError`."""
    kind, message = str(data.get("type", "Exception")), str(data.get("message", ""))
    if kind == "StreamTimeout" and data.get("limit") in ("timeout", "first_token_timeout", "idle_timeout"):
        return StreamTimeout(data["limit"], float(data.get("seconds") or 0))
    if kind == "ProducerLost":
        return ProducerLost(message)
    return RemoteError(kind, message)


# -- events -----------------------------------------------------------------------------


def dump_event(event: Event) -> str:
    """An event as a JSON text (its `id` is not written: it is the entry's position)."""
    kind, name, run_id, parents, tags, metadata, data, text, chunk, run_type, _ = event
    out: dict[str, Any] = {"k": kind}
    if name:
        out["n"] = name
    if run_id:
        out["r"] = run_id
    if parents:
        out["p"] = list(parents)
    if tags:
        out["g"] = list(tags)
    if metadata:
        out["m"] = dump_value(metadata)
    if chunk is not None:
        out["c"] = dump_value(chunk)
        if type(data) is dict and len(data) == 1 and data.get("chunk") is chunk:
            out["cd"] = 1
            data = _EMPTY
    if data or not isinstance(data, Mapping):
        out["d"] = dump_value(data)
    if text:
        out["t"] = text
    if run_type:
        out["y"] = run_type
    return str(_dumps(out))


def load_event(raw: str | bytes, id: str) -> Event:
    """An event written by `dump_event`, with its position `id`."""
    e = _loads(raw)
    chunk = load_value(e["c"]) if "c" in e else None
    if "cd" in e:
        data: Any = {"chunk": chunk}
    elif "d" in e:
        data = load_value(e["d"])
    else:
        data = _EMPTY
    metadata = MappingProxyType(load_value(e["m"])) if "m" in e else _EMPTY
    return _new(
        Event,
        (
            e["k"],
            e.get("n", ""),
            e.get("r", ""),
            tuple(e.get("p", ())),
            tuple(e.get("g", ())),
            metadata,
            data,
            e.get("t", ""),
            chunk,
            e.get("y", ""),
            id,
        ),
    )


# -- outcomes ---------------------------------------------------------------------------


def dump_outcome(outcome: Outcome) -> str:
    """How an attempt ended, as a JSON text."""
    out: dict[str, Any] = {"status": outcome.status}
    if outcome.output is not None:
        out["output"] = dump_value(outcome.output)
    if outcome.error is not None:
        out["error"] = _dump_error(outcome.error)
    if outcome.summary is not None:
        out["summary"] = dump_value(outcome.summary.to_dict())
    return str(_dumps(out))


def load_outcome(raw: str | bytes) -> Outcome:
    """An outcome written by `dump_outcome`."""
    o = _loads(raw)
    error = load_error(o["error"]) if o.get("error") is not None else None
    summary = None
    s = o.get("summary")
    if isinstance(s, dict):
        try:
            s = load_value(s)
            calls = tuple(ToolCall(**c) for c in s.pop("tool_calls", ()))
            summary = Summary(tool_calls=calls, **s)
        except (TypeError, ValueError):  # written by another version: the summary is optional
            summary = None
    return Outcome(o["status"], load_value(o.get("output")), error, summary)
