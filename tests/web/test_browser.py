"""Issue 12: a browser reads awkward token text from every encoder (headless Chromium).

A stdlib HTTP server in the test serves a page and the encoders' bytes for a
fixed sample of tokens (lone and split surrogates, NUL, CR, U+2028, `data:`
lines, a long token, and random code points). The page reads them with
`EventSource` (SSE in JSON and text mode, the OpenAI wire format) and `fetch`
+ `TextDecoder` (NDJSON), and writes what it joined as JSON into the DOM.
"""

from __future__ import annotations

import html
import json
import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import callstream
import callstream.openai
from callstream._web import LINE_SEP as _LINE_SEP
from callstream.sse import ndjson, sse
from tests.helpers import dump_dom

_rng = random.Random(12)
TOKENS = [
    "Hello",
    " world",
    "a\ud83d",  # an emoji split into its UTF-16 halves across two tokens
    "\ude00b",
    "\ud800",  # lone halves
    "x\udfff",
    "\x00nul",
    "cr\r",
    "\nlf",
    "crlf\r\n",
    "\u2028\u2029\x85",
    "\ndata: injected\n\nevent: done\ndata: {}\n\n",
    ": ping",
    "</pre><script>alert(1)</script>&amp;",
    "€" * 5000,
    *(
        "".join(chr(_rng.choice([_rng.randrange(0x20, 0x80), _rng.randrange(0, 0x110000)])) for _ in range(8))
        for _ in range(150)
    ),
]

PAGE = """<!doctype html><meta charset="utf-8"><pre id="result">pending</pre><script>
const out = {};
function sse(name, url, text) {
  return new Promise((resolve) => {
    const source = new EventSource(url); let joined = "";
    source.addEventListener("token", (e) => { joined += text ? e.data : JSON.parse(e.data).text; });
    source.addEventListener("done", () => { source.close(); out[name] = joined; resolve(); });
    source.onerror = () => { source.close(); out[name] = "error"; resolve(); };
  });
}
function openai(url) {
  return new Promise((resolve) => {
    const source = new EventSource(url); let joined = "", finish = null;
    source.onmessage = (e) => {
      if (e.data === "[DONE]") { source.close(); out.openai = joined; out.finish = finish; resolve(); return; }
      const choice = JSON.parse(e.data).choices[0];
      joined += choice.delta.content || ""; finish = choice.finish_reason || finish;
    };
    source.onerror = () => { source.close(); out.openai = "error"; resolve(); };
  });
}
async function lines(url) {
  const reader = (await fetch(url)).body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", joined = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const parts = buffer.split("\\n"); buffer = parts.pop();
    for (const line of parts) if (line) { const d = JSON.parse(line); if (d.event === "token") joined += d.text; }
  }
  out.ndjson = joined;
}
Promise.all([sse("json", "/sse", false), sse("text", "/sse-text", true), openai("/openai"), lines("/ndjson")])
  .then(() => { document.getElementById("result").textContent = JSON.stringify(out); });
</script>"""


def _stream() -> Any:
    def producer(emit: Any) -> None:
        for token in TOKENS:
            emit(token)

    return callstream.from_callback(producer)


ROUTES = {
    "/sse": lambda: sse(_stream()),
    "/sse-text": lambda: sse(_stream(), text=True),
    "/openai": lambda: callstream.openai.sse(_stream()),
    "/ndjson": lambda: ndjson(_stream()),
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/":
            body, kind = PAGE.encode(), "text/html; charset=utf-8"
        elif self.path in ROUTES:
            body = b"".join(ROUTES[self.path]())
            kind = "application/x-ndjson" if self.path == "/ndjson" else "text/event-stream; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def page_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


def units(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def test_browser_reads_every_token_from_every_encoder(page_server: str, tmp_path: Any) -> None:
    dom, stderr = dump_dom(page_server, tmp_path)
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found is not None and found.group(1) != "pending", stderr[-2000:]
    # JSON.stringify writes a lone surrogate as its escape, so the browser's strings come back code unit for unit
    got = json.loads(html.unescape(found.group(1)))
    joined = "".join(TOKENS)
    for mode in ("json", "openai", "ndjson"):  # JSON modes: exactly the model's text, as UTF-16 code units
        assert units(got[mode]) == units(joined), mode
    assert got["finish"] == "stop"
    # text mode (UTF-8): split pairs joined, lone halves as U+FFFD, CR and CRLF as LF
    text = units("".join(_LINE_SEP.sub("\n", t) for t in TOKENS)).decode("utf-16-le", "replace")
    assert got["text"] == text
