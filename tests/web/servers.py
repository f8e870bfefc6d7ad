"""Real servers for the reference apps: gunicorn and uvicorn in subprocesses on 127.0.0.1.

A plain module (no pytest): the web tests' fixtures and `benchmarks/web.py` both
start servers with it. `AppServer(name, upstream).start()` runs the app under the
server `name` (a key of `SERVERS`) on a free port and waits for `/health`;
`stop()` ends it. `app="module:attr"` serves another app under the same server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the apps' body limit in the tests: small, so a body past it fits in the socket buffers
MAX_BODY = 65536

#: server name -> its command; the last word is the app (`module:attr`)
SERVERS: dict[str, list[str]] = {
    "flask-gunicorn-gthread": ["gunicorn", "-k", "gthread", "--threads", "64", "adapters.flask.app:app"],
    "flask-gunicorn-sync": ["gunicorn", "-k", "sync", "-w", "4", "adapters.flask.app:app"],
    "django-gunicorn-gthread": [
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "64",
        "adapters.django.project.wsgi:application",
    ],
    "django-uvicorn-asgi": ["uvicorn", "adapters.django.project.asgi:application"],
    "fastapi-uvicorn": ["uvicorn", "adapters.fastapi.app:app"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppServer:
    def __init__(self, name: str, upstream: str, app: str | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        cmd = SERVERS[name]
        if app is not None:  # the app target is the command's last word
            cmd = [*cmd[:-1], app]
        bind = (
            ["-b", f"127.0.0.1:{self.port}"]
            if cmd[0] == "gunicorn"
            else ["--host", "127.0.0.1", "--port", str(self.port)]
        )
        extra = ["--log-level", "warning"]
        self.cmd = [str(BIN / cmd[0]), *cmd[1:], *bind, *extra]
        self.env = {
            **os.environ,
            "CALLSTREAM_BASE_URL": upstream,
            "CALLSTREAM_MODEL": "scripted:tokens=20,delay_ms=1",
            "CALLSTREAM_HEARTBEAT": "0.2",
            "CALLSTREAM_MAX_BODY": str(MAX_BODY),
            "OPENAI_API_KEY": "test-key",
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    @property
    def log(self) -> str:
        """What the server wrote so far (stdout and stderr)."""
        return "".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # read the server's output as it comes: a full pipe would block the server at its next log line
        threading.Thread(target=self._drain, name=f"drain-{self.name}", daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                time.sleep(0.1)
                raise RuntimeError(f"{self.name} exited: {self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/health", timeout=5).json())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
