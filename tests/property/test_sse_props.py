"""F48: any token text round-trips through the SSE encoder and two spec-compliant decoders."""

from __future__ import annotations

import json
from typing import Any

from httpx_sse._decoders import SSEDecoder as HttpxDecoder
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAIDecoder

from callstream.sse import _LINE_SEP, format_sse

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " world", "\n", "\r", "\r\n", "\n\nevent: admin\ndata: pwned", "data: x", "\u2028\x85\x1c", ": ping"]
)


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


@settings(max_examples=10_000)
@given(token=texts, event=texts, ident=texts)
def test_json_frames_round_trip_exactly(token: str, event: str, ident: str) -> None:
    raw = format_sse(json.dumps({"text": token}), event=event or "token", id=ident)
    for decoded in (decode_httpx(raw), decode_openai(raw)):
        assert len(decoded) == 1  # one frame: nothing in the token can inject an event
        name, data, _ = decoded[0]
        assert json.loads(data)["text"] == token
        expected = _LINE_SEP.sub("", event or "token")
        assert name == expected or (not expected and name in ("", "message", None))


@settings(max_examples=2_000)
@given(token=texts)
def test_text_frames_round_trip_but_for_cr(token: str) -> None:
    raw = format_sse(token, event="token", id="1")
    expected = _LINE_SEP.sub("\n", token)  # documented: CR and CRLF come back as LF
    for decoded in (decode_httpx(raw), decode_openai(raw)):
        assert len(decoded) == 1
        assert decoded[0][1] == expected


def test_leading_space_survives() -> None:
    raw = format_sse(" world", event="token")
    assert decode_httpx(raw)[0][1] == " world"
