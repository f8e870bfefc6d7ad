"""What the web encoders share: frame encoding, the drivers, the idle hook (private).

`callstream.sse` (SSE, NDJSON) and `callstream.openai` (the OpenAI wire format)
are built on this one internal interface, and reach into nothing else:

- **An encoder** is any object with the `Frames` methods, sans-I/O:
  `item(item)` turns one stream item into bytes (or None: nothing to send),
  and `item(IDLE)` into a keep-alive frame; `done(stream)` is the last frame
  of a stream that ended; `error(exc)` the last frame of one that failed,
  with a message safe for a client (it logs the traceback on `logger`).
- **The idle hook**: `items(stream, idle)` / `aitems(stream, idle)` yield a
  stream's items and, whenever `idle` seconds pass without one, `IDLE`. This
  is the one place outside the stream classes that uses their idle-aware
  iterator, which the public iterators do not offer.
- **The drivers**: `encode(stream, frames, heartbeat)` / `aencode(...)` run a
  stream through an encoder as the bytes of a response body: a keep-alive
  every `heartbeat` seconds of silence, `done` or (for an `Exception`) `error`
  at the end, and the stream closed in every case (a client that disconnects
  closes the body iterator, which stops the run).
- **Argument checks** done when the encoder is called, not at the first
  frame: `check(stream, cls, name, heartbeat)`.
- **Frame primitives**: `format_sse` (one SSE frame), `json_text` (one line of
  JSON any line splitter keeps whole), `utf8` (text as UTF-8, never
  failing), `safe` (a JSON-friendly view of callback data), `PING` (the SSE
  keep-alive comment), `LINE_SEP` (the SSE spec's line terminators) and
  `default_error_message` (the public default of `error_message=`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final, Protocol

from ._astream import AsyncStream
from ._face import IDLE
from ._stream import Stream
from .errors import StreamError

__all__ = (
    "IDLE",
    "LINE_SEP",
    "PING",
    "Frames",
    "aencode",
    "aitems",
    "check",
    "default_error_message",
    "encode",
    "format_sse",
    "items",
    "json_text",
    "logger",
    "safe",
    "utf8",
)

#: The web encoders' logger (named `callstream.sse`, for `callstream.openai` too).
logger = logging.getLogger("callstream.sse")

# The SSE spec's line terminators, and only those: str.splitlines() also splits
# on \u2028, \x85, \x1c... and would corrupt a token's text.
LINE_SEP: Final = re.compile(r"\r\n|\r|\n")

# A comment line with no blank line after it: a blank line would make
# httpx-sse and openai's decoders (which keep the last event id) dispatch an
# empty event; the spec ignores the comment either way.
PING: Final = b": ping\n"


# -- frame primitives ---------------------------------------------------------


def format_sse(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one SSE frame. `data` may hold any text; it cannot end the frame early.

    The frame is UTF-8, as the spec requires: a surrogate pair held as two code
    points is joined, a lone surrogate becomes U+FFFD (JSON callers escape
    surrogates first).
    """
    head = ""
    event = LINE_SEP.sub("", event or "")
    if event:
        head += "event: " + event + "\n"
    if id is not None:
        head += "id: " + LINE_SEP.sub("", id).replace("\0", "") + "\n"
    body = "".join("data: " + line + "\n" for line in LINE_SEP.split(data))
    return utf8(head + body + "\n")


def utf8(text: str) -> bytes:
    """`text` as UTF-8, never failing: surrogate pairs joined, lone surrogates as U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:  # only surrogates fail to encode
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


# Characters `json.dumps(ensure_ascii=False)` leaves raw that a transport cannot
# carry: surrogates have no UTF-8 form, and U+2028, U+2029 and U+0085 are line
# breaks to `str.splitlines()` (httpx's `iter_lines`, which NDJSON readers use).
# They only ever occur inside JSON strings, where their escape means the same.
_JSON_UNSAFE: Final = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(value: Any) -> str:
    """`value` as one line of JSON that encodes to UTF-8 and survives any line splitter."""
    return _JSON_UNSAFE.sub(_escape, json.dumps(value, ensure_ascii=False, allow_nan=False))


def safe(value: Any) -> Any:
    """A JSON-friendly view of callback data (messages become their content).

    Non-finite floats become `null`, as JavaScript's `JSON.stringify` does:
    `NaN` is no JSON and a browser's `JSON.parse` rejects it.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe(v) for v in value]
    content = getattr(value, "content", None)
    if content is not None:
        return safe(content)
    return str(value)


def default_error_message(exc: BaseException) -> str:
    """The message a client sees for an error: ours in full, others by type only."""
    if isinstance(exc, StreamError):
        return str(exc)
    return f"the stream failed ({type(exc).__name__})"


# -- the idle hook --------------------------------------------------------------


def items(stream: Stream[Any], idle: float | None) -> Iterator[Any]:
    """`stream`'s items, and `IDLE` whenever `idle` seconds pass without one (None: never)."""
    return stream._items(idle)


def aitems(stream: AsyncStream[Any], idle: float | None) -> AsyncIterator[Any]:
    """The async twin of `items`."""
    return stream._items(idle)


# -- the drivers ------------------------------------------------------------------


class Frames(Protocol):
    """An encoder as the drivers use it (SSE, NDJSON, the OpenAI wire format)."""

    def item(self, item: Any) -> bytes | None:
        """The frame(s) for one item, a keep-alive for `IDLE`, or None for nothing."""

    def done(self, stream: Stream[Any] | AsyncStream[Any]) -> bytes:
        """The last frame(s) of a stream that ended."""

    def error(self, exc: BaseException) -> bytes:
        """The last frame of a stream that failed: a safe message; logs the traceback."""


def encode(stream: Stream[Any], frames: Frames, heartbeat: float | None) -> Iterator[bytes]:
    """A response body: `stream` through `frames`, a keep-alive every `heartbeat` idle seconds."""
    try:
        try:
            for item in items(stream, heartbeat):
                frame = frames.item(item)
                if frame is not None:
                    yield frame
        except Exception as exc:  # the client gets a safe message, the log the traceback
            yield frames.error(exc)
            return
        yield frames.done(stream)
    finally:
        stream.close()  # a disconnect closes this generator: stop the run


async def aencode(stream: AsyncStream[Any], frames: Frames, heartbeat: float | None) -> AsyncIterator[bytes]:
    """The async twin of `encode`."""
    try:
        try:
            async for item in aitems(stream, heartbeat):
                frame = frames.item(item)
                if frame is not None:
                    yield frame
        except Exception as exc:
            yield frames.error(exc)
            return
        yield frames.done(stream)
    finally:
        stream.close()


# -- argument checks ----------------------------------------------------------------


def _check_heartbeat(heartbeat: float | None) -> None:
    if heartbeat is not None and (
        isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or not heartbeat > 0
    ):
        raise ValueError(f"heartbeat must be a positive number of seconds, or None for none; got {heartbeat!r}")


def check(stream: Any, cls: type, name: str, heartbeat: float | None = None) -> None:
    """Raise now if `stream` is not a `cls` or `heartbeat` is no positive number (or None)."""
    _check_heartbeat(heartbeat)
    if not isinstance(stream, cls):
        hint = "aiter_callbacks/afrom_callback" if cls is AsyncStream else "iter_callbacks/from_callback"
        raise TypeError(f"{name}() takes a {cls.__name__} (from {hint}), not {type(stream).__name__}")
