"""The reference apps under their real servers: `python -m benchmarks.web`.

Per server: time to first byte and tokens/s through callstream (`/stream`) vs
the same app returning the chain's native `stream()` (`/native`, mounted by
`benchmarks/webapps/`), medians over repeats in the same run; then 1,000 client
disconnects (RST after the first token) and the worker threads left behind.
`--quick` runs tiny sizes (the test suite uses it).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tests.web.servers import SERVERS, AppServer

from benchmarks.harness import table
from benchmarks.webapps import APPS
from callstream.testing import OpenAIServer


def one(app: AppServer, route: str, q: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("GET", f"{app.url}{route}?q={quote(q)}", timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("event: token"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0, tokens


def disconnect_latency(app: AppServer, upstream: OpenAIServer, n: int) -> dict[str, Any]:
    """Client RST after the first token -> the upstream model server sees its client go."""
    lat, after = [], []
    for i in range(n):
        tag = f"{app.name}-{i}"
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        q = quote(f"[[tokens=5000,delay_ms=2,tag={tag}]]")
        sock.sendall(f"GET /stream?q={q} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"event: token" not in data:
            data += sock.recv(4096)
        sent = upstream.stats(tag)[0]["sent"]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t_close = time.monotonic()
        sock.close()
        row = upstream.wait_ended(tag, timeout=10)[0]
        lat.append(row["t_end"] - t_close)
        after.append(row["sent"] - sent)
    lat.sort()
    return {
        "disconnect_p50_ms": lat[len(lat) // 2] * 1e3,
        "disconnect_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        "max_chunks_after_close": max(after),
    }


def disconnects(app: AppServer, n: int) -> dict[str, Any]:
    before = app.health()["callstream_workers"]
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        q = quote("[[tokens=2000,delay_ms=1]]")
        sock.sendall(f"GET /stream?q={q} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"event: token" not in data:
            data += sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 10
    health = app.health()
    while (health["open_streams"] or health["callstream_workers"] > before) and time.monotonic() < deadline:
        time.sleep(0.05)
        health = app.health()
    return {
        "disconnects": n,
        "workers_before": before,
        "workers_after": health["callstream_workers"],
        "open_streams_after": health["open_streams"],
        "server_threads_after": health["threads"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--disconnects", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="one repeat, a few disconnects (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.disconnects = 1, 5
    upstream = OpenAIServer().start()
    rows = []
    leak_rows = []
    q = "[[tokens=50,delay_ms=0]]" if args.quick else "[[tokens=500,delay_ms=0]]"
    try:
        for name in SERVERS:
            app = AppServer(name, upstream.base_url, app=APPS[name]).start()
            try:
                for route in ("/native", "/stream"):
                    one(app, route, q)  # warm-up
                res = {r: [one(app, r, q) for _ in range(args.repeats)] for r in ("/native", "/stream")}
                native_ttfb = statistics.median(x[0] for x in res["/native"])
                ours_ttfb = statistics.median(x[0] for x in res["/stream"])
                native_tps = statistics.median(x[2] / x[1] for x in res["/native"])
                ours_tps = statistics.median(x[2] / x[1] for x in res["/stream"])
                rows.append(
                    {
                        **disconnect_latency(app, upstream, 3 if args.quick else 50),
                        "row": name,
                        "ttfb_ms_native": native_ttfb * 1e3,
                        "ttfb_ms_callstream": ours_ttfb * 1e3,
                        "tokens_per_s_native": native_tps,
                        "tokens_per_s_callstream": ours_tps,
                        "tokens_per_s_ratio": ours_tps / native_tps,
                    }
                )
                if name != "flask-gunicorn-sync":  # /health would see one worker of four
                    leak_rows.append({"row": name, **disconnects(app, args.disconnects)})
                print(rows[-1], leak_rows[-1:], file=sys.stderr, flush=True)
            finally:
                app.stop()
    finally:
        upstream.stop()
    md = table("web: callstream vs the native stream(), same app", rows) + "\n" + table("web: disconnects", leak_rows)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "web.md").write_text(md)
    (out / "web.json").write_text(json.dumps({"throughput": rows, "disconnects": leak_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
