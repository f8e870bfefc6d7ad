"""Helpers shared by the tests: one body for both faces, scripted producers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import callstream


class Counter:
    """A producer that counts what it emitted and says when it started/ended."""

    def __init__(
        self,
        n: int = 10,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        error: BaseException | None = None,
        stall_after: int | None = None,
        ret: Any = "done",
    ) -> None:
        self.n = n
        self.delay = delay
        self.fail_after = fail_after
        self.error = error if error is not None else ValueError("scripted failure")
        self.stall_after = stall_after
        self.ret = ret
        self.count = 0
        self.started = threading.Event()
        self.finished = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.finished_at = 0.0

    def __call__(self, emit: Callable[[Any], None]) -> Any:
        self.started.set()
        try:
            for i in range(self.n):
                if self.fail_after is not None and i == self.fail_after:
                    raise self.error
                if self.stall_after is not None and i == self.stall_after:
                    self.stalled.set()
                    self.release.wait(30)
                emit(f"t{i}")
                self.count += 1
                if self.delay:
                    time.sleep(self.delay)
            if self.fail_after is not None and self.fail_after >= self.n:
                raise self.error
            return self.ret
        finally:
            self.finished_at = time.monotonic()
            self.finished.set()


def make(face: str, producer: Callable[..., Any], **kw: Any) -> Any:
    if face == "sync":
        return callstream.from_callback(producer, **kw)
    return callstream.afrom_callback(producer, **kw)


def run(face: str, stream: Any, body: Callable[[Any], Any] | None = None) -> list[Any]:
    """Iterate `stream` inside its context manager with either face."""
    got: list[Any] = []
    if face == "sync":
        with stream as s:
            for item in s:
                got.append(item)
                if body is not None and body(item) is False:
                    break
        return got

    async def go() -> list[Any]:
        async with stream as s:
            async for item in s:
                got.append(item)
                if body is not None and body(item) is False:
                    break
        return got

    return asyncio.run(go())


def run_tokens(face: str, stream: Any) -> list[str]:
    if face == "sync":
        return list(stream.tokens())

    async def go() -> list[str]:
        return [t async for t in stream.tokens()]

    return asyncio.run(go())


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            names = [t.name for t in threading.enumerate()]
            raise AssertionError(f"timed out waiting for {what}; threads: {names}")
        time.sleep(0.001)


def consumer_waiting(stream: Any) -> bool:
    """Whether `stream`'s consumer is waiting for an item: blocked in the sink's
    `take` (the sync face: `statistics().consumers_waiting`), or, for the async
    face, which awaits a wakeup instead, with that wakeup armed on the sink (the
    built-in sinks keep it in `_wakeup`)."""
    return stream.statistics().consumers_waiting > 0 or getattr(stream._core.sink, "_wakeup", None) is not None


class DelegatingSink:
    """A custom Sink that forwards to a built-in one; tests override a method.

    Methods are spelled out: `isinstance(x, Sink)` on Python 3.12+ looks them up
    statically, so a `__getattr__` forwarder would not count as a Sink.
    """

    def __init__(self) -> None:
        self.inner = callstream.QueueSink()

    def put(self, item: Any) -> None:
        self.inner.put(item)

    def finish(self) -> None:
        self.inner.finish()

    def take(self, timeout: float | None) -> Any:
        return self.inner.take(timeout)

    def set_wakeup(self, fn: Any) -> None:
        self.inner.set_wakeup(fn)

    def close(self) -> None:
        self.inner.close()

    def statistics(self) -> Any:
        return self.inner.statistics()


def drain_into(face: str, stream: Any, got: list[Any]) -> None:
    """Iterate `stream` in its context manager with either face, appending to
    `got` as items arrive, so the items before an exception stay visible."""
    if face == "sync":
        with stream as s:
            got.extend(s)
        return

    async def go() -> None:
        async with stream as s:
            async for item in s:
                got.append(item)

    asyncio.run(go())


def dump_dom(url: str, profile: Any) -> tuple[str, str]:
    """Load `url` in Debian's headless Chromium and return (the DOM after its scripts ran, stderr).

    Skips when Chromium is missing here; fails under CI, which installs it (`.ci/run`).
    """
    import os
    import shutil
    import subprocess

    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (CI installs it)")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    return proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", errors="replace")
