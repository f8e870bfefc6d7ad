"""Running a core's producer: in a thread of its own, or as a task on the consumer's loop.

The core (`_core._Core`) holds the state and the rules and never starts
anything itself: at `start()` it hands itself to its worker, and at a close or
a deadline it asks the worker to `cancel()`. A worker is any object with those
two methods (`Worker`):

- `ThreadWorker`: the producer runs in a daemon thread of its own, with the
  caller's `contextvars`; nothing to cancel, the sink's `Cancelled` stops it
  at its next emit. Started streams are kept in an at-exit registry
  (`track`), so that producers of streams still open at exit are stopped.
- `TaskWorker`: an `async def` producer runs as a task on the consumer's event
  loop (only for a sink that never blocks); cancelling cancels the task, from
  any thread.
- `_push._PushWorker`: `start(push)` runs in the consumer's thread, and
  cancelling runs the user's `on_cancel` hooks.

Either way the worker reports back through the core: `core.record(exc, value)`
with the producer's outcome, then `core.worker_ended()`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._core import _Core

__all__ = ("AsyncProducer", "Emit", "Producer", "TaskWorker", "ThreadWorker", "Worker", "as_producer", "track")

Emit = Callable[[Any], None]
Producer = Callable[[Emit], Any]
AsyncProducer = Callable[[Emit], Awaitable[Any]]


class Worker(Protocol):
    """What a core needs from whatever runs its producer."""

    def start(self, core: _Core[Any]) -> None:
        """Start the producer (called once). Raises if it cannot be started."""

    def cancel(self) -> None:
        """Stop the producer without waiting for it. Idempotent; safe from any thread."""


class ThreadWorker:
    """The producer in a daemon thread of its own, with the caller's `contextvars`."""

    __slots__ = ("_context", "_producer")

    def __init__(self, producer: Producer) -> None:
        self._producer: Producer | None = producer
        self._context = contextvars.copy_context()

    def start(self, core: _Core[Any]) -> None:
        thread = threading.Thread(target=self._run, args=(core,), name=f"callstream-{core.id}", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._producer = None
            raise
        track(core)

    def cancel(self) -> None:
        """Nothing to do: the closed sink raises `Cancelled` at the producer's next emit."""

    def _run(self, core: _Core[Any]) -> None:
        producer = self._producer
        assert producer is not None
        try:
            value = self._context.run(producer, core.make_emit())
        except BaseException as exc:
            core.record(exc, None)
        else:
            core.record(None, value)
        finally:
            self._producer = None
            core.worker_ended()


class TaskWorker:
    """An `async def` producer as a task on the consumer's event loop."""

    __slots__ = ("_aproducer", "_context", "_loop", "_task")

    def __init__(self, aproducer: AsyncProducer) -> None:
        self._aproducer: AsyncProducer | None = aproducer
        self._context = contextvars.copy_context()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, core: _Core[Any]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # Created inside the caller's context copy: the task sees its contextvars.
        self._task = self._context.run(loop.create_task, self._run(core), name=f"callstream-{core.id}")

    def cancel(self) -> None:
        cancel_task(self._task, self._loop)

    async def _run(self, core: _Core[Any]) -> None:
        aproducer = self._aproducer
        assert aproducer is not None
        try:
            value = await aproducer(core.make_emit())
        except BaseException as exc:
            core.record(exc, None)
        else:
            core.record(None, value)
        finally:
            self._aproducer = None
            core.worker_ended()


def cancel_task(task: asyncio.Task[Any] | None, loop: asyncio.AbstractEventLoop | None) -> None:
    """Cancel `task` (running on `loop`) from its loop, another thread, or a finaliser."""
    if task is None or loop is None or task.done():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task.cancel()
    else:  # a finaliser or another thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone
            loop.call_soon_threadsafe(task.cancel)


def as_producer(producer: Callable[[Emit], Any]) -> Producer:
    """Check `producer`; one that returns a coroutine (an `async def`) has it
    run to the end in the worker thread, on an event loop of its own."""
    if not callable(producer):
        raise TypeError(f"producer must be callable as producer(emit), not {type(producer).__name__}")

    def produce(emit: Emit) -> Any:
        value = producer(emit)
        if inspect.iscoroutine(value):
            return asyncio.run(value)
        return value

    return produce


# -- the at-exit registry -------------------------------------------------------------

_live: weakref.WeakSet[_Core[Any]] = weakref.WeakSet()


def track(core: _Core[Any]) -> None:
    """Stop `core`'s producer at interpreter exit if its stream is still open then."""
    _live.add(core)


@atexit.register
def _close_all_at_exit() -> None:
    """Stop producers of streams still open at exit (say, held in a cycle), so
    an unconsumed producer does not keep filling memory during shutdown."""
    for core in list(_live):
        try:
            core.close()
        except Exception:
            continue
