"""F48 and issue 12: any token text, and any JSON-able data, round-trips through every web encoder.

The decoders are the ones clients use, fed the encoder's bytes cut at arbitrary
places (inside a UTF-8 sequence too): httpx-sse's `EventSource` over an
`httpx.Response`, httpx's own `iter_lines()` for NDJSON (it splits on U+2028
and friends, as `str.splitlines()` does), and the `openai` SDK's `Stream`
(its SSE parser and chunk types). The browser's `EventSource` gets a sample in
tests/web/test_browser.py.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import httpx
import httpx2
import openai
from httpx_sse import EventSource
from httpx_sse._decoders import SSEDecoder as HttpxDecoder
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAIDecoder
from openai.types.chat import ChatCompletionChunk

import callstream
import callstream.openai
from callstream._web import LINE_SEP as _LINE_SEP
from callstream.sse import format_sse, ndjson, sse

# Text a model may produce: any code point, lone surrogates included, and the awkward cases by name.
AWKWARD = [
    "",
    " world",
    "\n",
    "\r",
    "\r\n",
    "\x00",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    "\n\nevent: admin\ndata: pwned",
    "data: x",
    ": ping",
    "\ud83d",  # a high surrogate alone (the first half of 😀)
    "\ude00",  # a low surrogate alone
    "\ud83d\ude00",  # a pair held as two code points
    "😀",
    "x" * 70_000,  # longer than any buffer on the way
]
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
texts = any_text | st.sampled_from(AWKWARD)
# an emoji cut into its UTF-16 halves across two tokens, as byte-level tokenizers do
split_pairs = st.builds(lambda a, b: [a + "\ud83d", "\ude00" + b], any_text, any_text)
token_lists = st.lists(texts | split_pairs, max_size=12).map(
    lambda items: [t for item in items for t in (item if isinstance(item, list) else [item])]
)
# where the network cuts the bytes (positions, taken modulo the length): inside UTF-8 sequences too
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=24)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def units(text: str) -> bytes:
    """Text as UTF-16 code units: a pair held as two code points equals the character it makes."""
    return text.encode("utf-16-le", "surrogatepass")


def as_utf8(text: str) -> str:
    """What UTF-8 can carry of `text`: pairs joined, lone surrogates as U+FFFD."""
    return units(text).decode("utf-16-le", "replace")


def pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    """`raw` cut at the given positions (modulo its length): a network's arbitrary boundaries."""
    at = sorted({c % len(raw) for c in cuts} | {0, len(raw)}) if raw else [0]
    return [raw[a:b] for a, b in itertools.pairwise(at)]


def emitting(tokens: list[Any]) -> Any:
    def producer(emit: Any) -> None:
        for t in tokens:
            emit(t)

    return producer


@functools.cache
def sdk_client() -> openai.OpenAI:
    """A client for the SDK's `Stream` (it makes the SSE decoder); it sends nothing."""
    return openai.OpenAI(api_key="x", base_url="http://test/v1")


def events_httpx_sse(raw: bytes, sizes: list[int]) -> list[tuple[str, str]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(pieces(raw, sizes)))
    return [(e.event, e.data) for e in EventSource(response).iter_sse()]


def encode_sse(tokens: list[Any], **kw: Any) -> bytes:
    return b"".join(sse(callstream.from_callback(emitting(tokens)), heartbeat=None, **kw))


@settings(max_examples=300)
@given(tokens=token_lists, sizes=cuts)
def test_sse_json_tokens_round_trip(tokens: list[str], sizes: list[int]) -> None:
    events = events_httpx_sse(encode_sse(tokens), sizes)
    assert events[-1] == ("done", '{"status": "completed"}')
    got = [json.loads(data)["text"] for name, data in events if name == "token"]
    assert [units(t) for t in got] == [units(t) for t in tokens if t]  # token by token, exactly


@settings(max_examples=300)
@given(tokens=token_lists, sizes=cuts)
def test_sse_text_mode_round_trip(tokens: list[str], sizes: list[int]) -> None:
    # documented: UTF-8 text, so split pairs are joined and a lone surrogate is U+FFFD; CR and CRLF come back as LF
    events = events_httpx_sse(encode_sse(tokens, text=True), sizes)
    assert events[-1] == ("done", '{"status": "completed"}')
    got = "".join(data for name, data in events if name == "token")
    assert got == as_utf8("".join(_LINE_SEP.sub("\n", t) for t in tokens))


@settings(max_examples=300)
@given(tokens=token_lists, sizes=cuts)
def test_ndjson_tokens_round_trip_through_iter_lines(tokens: list[str], sizes: list[int]) -> None:
    raw = b"".join(ndjson(callstream.from_callback(emitting(tokens)), heartbeat=None))
    response = httpx.Response(200, content=iter(pieces(raw, sizes)))
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1] == {"event": "done", "status": "completed"}
    assert [units(d["text"]) for d in lines[:-1]] == [units(t) for t in tokens if t]


@settings(max_examples=200)
@given(tokens=token_lists, sizes=cuts)
def test_openai_wire_round_trips_through_the_sdk_stream(tokens: list[str], sizes: list[int]) -> None:
    raw = b"".join(callstream.openai.sse(callstream.from_callback(emitting(tokens)), heartbeat=None))
    assert raw.endswith(b"data: [DONE]\n\n")
    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=iter(pieces(raw, sizes)),
        request=httpx2.Request("POST", "http://test/v1/chat/completions"),
    )
    chunks = list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=sdk_client()))
    got = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert [units(t or "") for t in got] == [units(t) for t in tokens if t]
    assert chunks[-1].choices[0].finish_reason == "stop"


@settings(max_examples=300)
@given(data=st.lists(json_values, max_size=5), sizes=cuts)
def test_any_json_data_round_trips(data: list[Any], sizes: list[int]) -> None:
    # non-str items are sent as `item` events (SSE) and lines (NDJSON) with their data as JSON
    items = [d for d in data if not isinstance(d, str)]
    events = events_httpx_sse(encode_sse(items), sizes)
    sent = [json.loads(d)["data"] for n, d in events if n == "item"]
    raw = b"".join(ndjson(callstream.from_callback(emitting(items)), heartbeat=None))
    lines = [json.loads(line) for line in httpx.Response(200, content=iter(pieces(raw, sizes))).iter_lines() if line]
    assert lines.pop() == {"event": "done", "status": "completed"}
    expected = [canonical(i) for i in items]
    assert [canonical(s) for s in sent] == expected
    assert [canonical(line["data"]) for line in lines] == expected


def canonical(value: Any) -> Any:
    """A JSON value with its strings as code units (see `units`)."""
    if isinstance(value, str):
        return units(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {units(k): canonical(v) for k, v in value.items()}
    return value


# -- single frames: two spec-compliant line decoders -------------------------------


def _decode(decoder: Any, raw: bytes) -> list[tuple[str | None, str, str | None]]:
    out = []
    for line in _LINE_SEP.split(raw.decode())[:-1]:  # the text after the last newline is no line
        event = decoder.decode(line)
        if event is not None:
            out.append((event.event, event.data, event.id))
    return out


def decode_httpx(raw: bytes) -> list[tuple[str | None, str, str | None]]:
    return _decode(HttpxDecoder(), raw)


def decode_openai(raw: bytes) -> list[tuple[str | None, str, str | None]]:
    return _decode(OpenAIDecoder(), raw)


@settings(max_examples=1_000)
@given(token=texts, event=texts, ident=texts)
def test_json_frames_round_trip_exactly(token: str, event: str, ident: str) -> None:
    raw = format_sse(json.dumps({"text": token}), event=event or "token", id=ident)
    for decoded in (decode_httpx(raw), decode_openai(raw)):
        assert len(decoded) == 1  # one frame: nothing in the token can inject an event
        name, data, _ = decoded[0]
        assert units(json.loads(data)["text"]) == units(token)
        expected = as_utf8(_LINE_SEP.sub("", event or "token"))
        assert name == expected or (not expected and name in ("", "message", None))


@settings(max_examples=500)
@given(token=texts)
def test_text_frames_round_trip_but_for_cr(token: str) -> None:
    raw = format_sse(token, event="token", id="1")
    expected = as_utf8(_LINE_SEP.sub("\n", token))  # documented: CR and CRLF come back as LF
    for decoded in (decode_httpx(raw), decode_openai(raw)):
        assert len(decoded) == 1
        assert decoded[0][1] == expected


def test_leading_space_survives() -> None:
    raw = format_sse(" world", event="token")
    assert decode_httpx(raw)[0][1] == " world"
