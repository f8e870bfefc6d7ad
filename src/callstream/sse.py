"""Web encoders: a `Stream` or `AsyncStream` as Server-Sent Events or NDJSON bytes.

```python
# Django / Flask (WSGI): a sync iterator
return StreamingHttpResponse(sse(iter_callbacks(chain, inputs)), headers=SSE_HEADERS)
# FastAPI / Starlette: an async iterator
return StreamingResponse(asse(aiter_callbacks(chain, inputs)), headers=SSE_HEADERS)
```

What the frames guarantee (the HTML spec's event-stream format):

- one `event:` name per event kind (`token`, `tool_start`, `tool_end`,
  `tool_error`, `custom`, `interrupt`,
  `preamble`, `attempt`; others on request), `data:` as one line
  of JSON; newlines are stripped from `event` and `id`;
- an `id:` only on the events of a relay subscription (`relay.subscribe`):
  the event's position, which a browser's `EventSource` sends back as
  `Last-Event-ID` when it reconnects, so the app resumes right after it.
  No other frame carries an `id:` (an `id:` that is not a position would
  make a reconnect resume at the wrong place);
- a LangGraph graph that pauses on `interrupt()` sends `event: interrupt`
  with `{"name", "run_id", "interrupts": [{"id", "value", "node", "ns"}, ...],
  "checkpoint_id"}` (the question to show, and the ids to answer with
  `Command(resume=...)`), then `event: done` with `{"status": "interrupted"}`;
- no token can break a frame or inject an event: data is JSON (or, in text
  mode, split into `data:` lines on exactly `\\r\\n`, `\\r`, `\\n`);
- every token's text arrives, whatever it holds (NUL, `\\r`, U+2028,
  `data:` lines, a lone or split UTF-16 surrogate): JSON data carries it
  exactly (a surrogate half as its `\\udXXX` escape, which JavaScript's
  `JSON.parse` and Python's `json.loads` both read back; U+2028, U+2029 and
  U+0085 escaped too, so `str.splitlines()`-based readers cannot cut a line);
  text mode, which is UTF-8, joins a surrogate pair split across tokens and
  writes a lone surrogate as U+FFFD, and a decoder gives CR and CRLF back as LF;
- a final `event: done` (never an empty `data:`); a producer error becomes
  `event: error` with a safe message — no traceback reaches the client — and
  the response then ends cleanly;
- `: ping` comment lines every `heartbeat` seconds while the model is silent, so a
  WSGI server notices a client that left (it only does on a write) and
  proxies keep the connection open.

When the response iterator is closed (the client disconnected) or collected,
the stream is closed and the run stops at its next callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any, Final, get_args

from ._astream import AsyncStream
from ._stream import Stream
from ._web import IDLE, PING, aencode, check, default_error_message, encode, format_sse, json_text, logger, safe
from .errors import StreamGap
from .events import Event, EventKind, token_text

__all__ = (
    "DEFAULT_KINDS",
    "NDJSON_HEADERS",
    "SSE_HEADERS",
    "Encoder",
    "andjson",
    "asse",
    "default_error_message",
    "format_sse",
    "ndjson",
    "sse",
)

#: Headers for an SSE response: no caching, no proxy buffering (nginx reads
#: `X-Accel-Buffering`). No `Content-Length` and no hop-by-hop `Connection`.
SSE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
NDJSON_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "application/x-ndjson",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

#: The event kinds sent by default: what a chat UI shows.
DEFAULT_KINDS: Final = frozenset(
    {"token", "tool_start", "tool_end", "tool_error", "custom", "interrupt", "preamble", "attempt"}
)

_KINDS: Final = frozenset(get_args(EventKind))


def _is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


class Encoder:
    """Turns items into frames; sans-I/O, shared by the sync and async drivers.

    `sse`, `asse`, `ndjson` and `andjson` build one per response; use one
    directly to write frames to a transport of your own (one encoder per
    stream: it holds back half of a split surrogate pair in text mode).
    An `Event` read from a relay (its `id` set) is written with that id
    (`id:` in SSE, an `"id"` member in NDJSON); nothing else carries one.

    Args:
        format: `"sse"` (JSON data), `"sse-text"` (token text as raw `data:`
            lines, other events as JSON) or `"ndjson"`.
        kinds: which event kinds to send (default `DEFAULT_KINDS`).
        error_message: what a client is told about an exception.
        include_empty: send token events whose text is empty (tool-call chunks).
        summary: put `stream.summary` in the final `done` event.
    """

    def __init__(
        self,
        format: str = "sse",
        *,
        kinds: Collection[str] = DEFAULT_KINDS,
        error_message: Callable[[BaseException], str] = default_error_message,
        include_empty: bool = False,
        summary: bool = False,
    ) -> None:
        if format not in ("sse", "sse-text", "ndjson"):
            raise ValueError(f"format must be 'sse', 'sse-text' or 'ndjson', not {format!r}")
        unknown = set(kinds) - _KINDS
        if isinstance(kinds, str) or unknown:
            raise ValueError(f"unknown event kinds {sorted(unknown) or kinds!r}; accepted: {', '.join(sorted(_KINDS))}")
        self.format = format
        self.kinds = frozenset(kinds)
        self.error_message = error_message
        self.include_empty = include_empty
        self.summary = summary
        self._held = ""

    def payload(self, item: Any) -> tuple[str, dict[str, Any]] | None:
        """The event name and JSON payload for an item, or None to skip it."""
        text = token_text(item)
        if text is not None:  # a token item: a str, or a token Event
            if not (text or self.include_empty):
                return None
            if type(item) is str:
                return "token", {"text": text}
        if not isinstance(item, Event):
            return "item", {"data": safe(item)}
        if item.kind not in self.kinds:
            return None
        base: dict[str, Any] = {"name": item.name, "run_id": item.run_id}
        if text is not None:
            return "token", {"text": text, **base}
        if item.kind == "custom":
            return "custom", {**base, "data": safe(item.data)}
        data = {k: safe(v) if k != "error" else type(v).__name__ for k, v in item.data.items()}
        return item.kind, {**base, **data}

    def frame(self, name: str, payload: dict[str, Any], id: str | None = None) -> bytes:
        """One frame (or none: b""), after the text held back from the last token, if any.

        `id`: the event's position in a relay, written as the frame's `id:`.
        """
        text_token = self.format == "sse-text" and name == "token"
        out = b""
        if self._held and not text_token:  # the pair was never completed: a lone surrogate, U+FFFD
            held, self._held = self._held, ""
            out = format_sse(held, event="token")
        return out + self._frame(name, payload, id or None)

    def _frame(self, name: str, payload: dict[str, Any], id: str | None) -> bytes:
        if self.format == "ndjson":
            head = {"event": name} if id is None else {"event": name, "id": id}
            return (json_text({**head, **payload}) + "\n").encode()
        if self.format == "sse-text" and name == "token":
            # UTF-8 text: keep a trailing high surrogate until the next token,
            # which may start with its low half (a model that split an emoji).
            text = self._held + payload["text"]
            self._held = ""
            if text and _is_high_surrogate(text[-1]):
                self._held, text = text[-1], text[:-1]
            if not text:
                # Nothing to send now, but a position to keep: an id-only
                # frame, which a client records without dispatching an event.
                return f"id: {id}\n\n".encode() if id is not None else b""
            return format_sse(text, event=name, id=id)
        return format_sse(json_text(payload), event=name, id=id)

    def item(self, item: Any) -> bytes | None:
        """The frame for one stream item, a keep-alive while the stream is idle, or None to skip it."""
        if item is IDLE:
            return self.ping()
        found = self.payload(item)
        if found is None:
            return None
        return self.frame(*found, item.id if type(item) is Event else None) or None

    def ping(self) -> bytes:
        """The keep-alive: a `: ping` comment line (NDJSON: an empty line)."""
        return b"\n" if self.format == "ndjson" else PING

    def done(self, stream: Stream[Any] | AsyncStream[Any]) -> bytes:
        """The final `done` event, with the stream's status (and summary, if asked)."""
        if self.summary:
            return self.frame("done", {"status": stream.status, "summary": safe(stream.summary.to_dict())})
        return self.frame("done", {"status": stream.status})

    def error(self, exc: BaseException) -> bytes:
        """The final `error` event for `exc`, with a safe message; the traceback goes to the log
        (a `StreamGap` is the client's: a stale `Last-Event-ID`, or a subscriber that fell
        `maxlen` behind, logged as one line at INFO)."""
        if isinstance(exc, StreamGap):
            logger.info("stream ended: the events the client asked for are gone: %s", exc)
        else:
            logger.error("stream failed after the response started", exc_info=exc)
        return self.frame("error", {"type": type(exc).__name__, "message": self.error_message(exc)})


def sse(
    stream: Stream[Any],
    *,
    heartbeat: float | None = 15.0,
    kinds: Collection[str] = DEFAULT_KINDS,
    text: bool = False,
    error_message: Callable[[BaseException], str] = default_error_message,
    summary: bool = False,
) -> Iterator[bytes]:
    """Encode a `Stream` as Server-Sent Events, for WSGI (Django, Flask).

    Args:
        stream: from `iter_callbacks` or `from_callback`, entered or not.
        heartbeat: seconds of silence before a `: ping` comment (None: never).
        kinds: event kinds to send.
        text: send token text as raw `data:` lines instead of JSON (a decoder
            gives it back with CR and CRLF turned into LF).
        error_message: what the client is told about a producer error.
        summary: send `stream.summary` in the final `done` event.
    """
    check(stream, Stream, "sse", heartbeat)
    encoder = Encoder("sse-text" if text else "sse", kinds=kinds, error_message=error_message, summary=summary)
    return encode(stream, encoder, heartbeat)


def asse(
    stream: AsyncStream[Any],
    *,
    heartbeat: float | None = 15.0,
    kinds: Collection[str] = DEFAULT_KINDS,
    text: bool = False,
    error_message: Callable[[BaseException], str] = default_error_message,
    summary: bool = False,
) -> AsyncIterator[bytes]:
    """The async twin of `sse`, for ASGI (FastAPI, Starlette, Django under ASGI)."""
    check(stream, AsyncStream, "asse", heartbeat)
    encoder = Encoder("sse-text" if text else "sse", kinds=kinds, error_message=error_message, summary=summary)
    return aencode(stream, encoder, heartbeat)


def ndjson(
    stream: Stream[Any],
    *,
    heartbeat: float | None = 15.0,
    kinds: Collection[str] = DEFAULT_KINDS,
    error_message: Callable[[BaseException], str] = default_error_message,
    summary: bool = False,
) -> Iterator[bytes]:
    """One JSON object per line (`{"event": "token", "text": ...}`), then `{"event": "done"}`.

    The heartbeat is an empty line, which line-oriented JSON readers skip.
    """
    check(stream, Stream, "ndjson", heartbeat)
    return encode(stream, Encoder("ndjson", kinds=kinds, error_message=error_message, summary=summary), heartbeat)


def andjson(
    stream: AsyncStream[Any],
    *,
    heartbeat: float | None = 15.0,
    kinds: Collection[str] = DEFAULT_KINDS,
    error_message: Callable[[BaseException], str] = default_error_message,
    summary: bool = False,
) -> AsyncIterator[bytes]:
    """The async twin of `ndjson`."""
    check(stream, AsyncStream, "andjson", heartbeat)
    return aencode(stream, Encoder("ndjson", kinds=kinds, error_message=error_message, summary=summary), heartbeat)
