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
- `PullWorker`: no thread and no task: the consumer steps the producer's
  iterator itself when the buffer is empty (a language model's
  `stream()`/`astream()`, whose callbacks fire as it yields).
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
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._core import _Core

__all__ = (
    "AsyncProducer",
    "Emit",
    "Producer",
    "PullWorker",
    "TaskWorker",
    "ThreadWorker",
    "Worker",
    "as_producer",
    "track",
)

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
            # Let go of the producer and the task (the task's context holds LangChain's
            # config, and through it our handler and the core): the stream is then freed
            # by reference counting, not left to the cycle collector.
            self._aproducer = None
            self._task = None
            core.worker_ended()


#: the task running on a loop, per step of a pulled model: 3.11's `asyncio.current_task`
#: is Python (a `get_running_loop()`, then this very lookup); 3.12's is C
_task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
    if sys.version_info < (3, 12)
    else asyncio.current_task
)


class Pulled(Protocol):
    """What a `PullWorker` steps: a run that opens its producer's iterator (sync
    or async) and makes the run's value once it ended (from what its callbacks
    reported: the chunks are not kept)."""

    def open(self) -> Iterator[Any]: ...

    def aopen(self) -> AsyncIterator[Any]: ...

    def finish(self) -> Any: ...


class PullWorker:
    """A producer the consumer steps itself: no thread, no task, no hand-off.

    For a producer that yields as it reports: a language model's
    `stream()`/`astream()`, whose token callback fires just before each chunk
    is yielded. When the buffer is empty the consumer advances the iterator
    one chunk, in its own thread (`step`) or task (`astep`); the callbacks
    fired meanwhile land in the sink, which the consumer then takes. This is
    how the model runs without callstream: a thousand streams cost a thousand
    generators, not a thousand tasks waking a thousand consumers per token.

    The one difference with a producer of its own: the run advances only while
    the consumer asks for the next item. Whenever the consumer must wait without
    advancing it (a heartbeat's idle wait), `detach()` hands the rest of the
    iterator to a `ThreadWorker` or `TaskWorker` at a step boundary.

    Stopping: between steps, `cancel()` closes the iterator (an HTTP model's
    response is closed, as on `break`). During an async step, it cancels the
    consumer's own task at the point where it awaits the model, and the step
    takes that cancellation back (`Task.uncancel`, as `asyncio.timeout` does);
    a deadline arms the same interruption. During a sync step in another
    thread, the closed sink raises `Cancelled` at the model's next callback.
    A cancellation of the consumer's task that is not ours (the task itself
    cancelled) stops the run and propagates unchanged.
    """

    __slots__ = (
        "_close_lock",
        "_core",
        "_interrupted",
        "_is_async",
        "_it",
        "_loop",
        "_run",
        "_stepping",
        "_task",
        "_timer",
    )

    def __init__(self, run: Pulled, *, is_async: bool) -> None:
        # the run itself, not its bound methods: one object fewer per stream
        self._run: Pulled | None = run
        self._is_async = is_async
        self._it: Any = None
        self._core: _Core[Any] | None = None
        self._stepping = False
        # a sync step and a close from another thread meet under it (an async one needs none)
        self._close_lock = _NO_LOCK if is_async else threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._interrupted = False
        self._timer: asyncio.TimerHandle | None = None

    # -- the Worker protocol -----------------------------------------------------

    def start(self, core: _Core[Any]) -> None:
        self._core = core
        if self._is_async:
            self._loop = asyncio.get_running_loop()
        run = self._run
        assert run is not None
        self._it = run.aopen() if self._is_async else run.open()  # nothing runs before the first step

    def cancel(self) -> None:
        if self._it is None:
            return
        if not self._is_async:
            # Not while a step runs (another thread's): that step's next callback
            # meets the closed sink, and the consumer closes the iterator after it.
            if self._close_lock.acquire(blocking=False):
                try:
                    self._close_sync()
                finally:
                    self._close_lock.release()
            return
        assert self._loop is not None
        _on_loop(self._loop, self._cancel_on_loop)

    # -- the consumer's steps ----------------------------------------------------

    def step(self, core: _Core[Any]) -> None:
        """Advance the producer one chunk, in the consumer's thread."""
        it = self._it
        if it is None:
            return
        with self._close_lock:
            if core.stopping:
                self._close_sync()
                return
            try:
                next(it)
            except StopIteration:
                self._end(core, None)
            except BaseException as exc:
                self._end(core, exc)
            if core.stopping:
                self._close_sync()

    async def astep(self, core: _Core[Any], wait: float | None) -> None:
        """Advance the producer one chunk, in the consumer's task; `wait`: the
        seconds until the nearest deadline (None: none). A face's per-token loop
        inlines this (`begin`, await, `stepped` or `failed`): no coroutine per token."""
        step = self.begin(core, wait)
        if step is not None:
            try:
                await step
            except BaseException as exc:
                self.failed(core, exc)
            else:
                self.stepped(core)

    def begin(self, core: _Core[Any], wait: float | None) -> Awaitable[Any] | None:
        """Start an async step: the producer's next chunk, for the consumer's task
        to await, then to report with `stepped` or `failed`; None: nothing to
        step (the run ended, or is stopping: then it is closed)."""
        it = self._it
        if it is None or core.stopping:
            if it is not None:
                self._cancel_on_loop()
            return None
        # The task to interrupt (a deadline, a close from elsewhere): this step's.
        self._task = _task_of(self._loop)  # type: ignore[arg-type]
        if wait is not None:
            self._timer = self._loop.call_later(wait, self._deadline)  # type: ignore[union-attr]
        self._stepping = True
        return it.__anext__()  # type: ignore[no-any-return]

    def stepped(self, core: _Core[Any]) -> None:
        """The step `begin` started yielded a chunk."""
        self._stepping = False
        if self._interrupted or self._timer is not None:
            self._stepped(self._task, cancelled=False)  # type: ignore[arg-type]
        if core.stopping and self._it is not None:
            self._cancel_on_loop()

    def failed(self, core: _Core[Any], exc: BaseException) -> None:
        """The step `begin` started raised `exc`: the run's end, its error, or a
        cancellation (ours is taken back; the consumer's own is raised again)."""
        task = self._task
        assert task is not None
        self._stepped(task, cancelled=isinstance(exc, asyncio.CancelledError))
        self._astep_failed(core, task, exc)

    def _stepped(self, task: asyncio.Task[Any], *, cancelled: bool) -> None:
        """After a step: no timer, and our interruption taken back if the producer
        swallowed it (a step ended by it is `_astep_failed`'s)."""
        self._stepping = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._interrupted and not cancelled:
            self._interrupted = False
            task.uncancel()

    def _astep_failed(self, core: _Core[Any], task: asyncio.Task[Any], exc: BaseException) -> None:
        if isinstance(exc, StopAsyncIteration):
            self._end(core, None)
        elif isinstance(exc, asyncio.CancelledError):
            if not self._interrupted:  # the consumer's task itself was cancelled: it stops the run
                core.stopping = True
                self._end(core, exc)
                raise exc
            self._interrupted = False  # ours (a deadline, a close): taken back, the stream ends
            task.uncancel()
            self._end(core, exc)
        else:
            self._end(core, exc)

    def detach(self, core: _Core[Any]) -> Worker:
        """Hand the rest of the iterator to a worker of its own (a task on this
        loop, or a thread), started now, and return it; this worker is done."""
        it, run = self._it, self._run
        assert run is not None
        finish = run.finish
        self._release()
        worker: Worker
        if self._is_async:

            async def adrain(emit: Emit) -> Any:
                async for _ in it:
                    pass
                return finish()

            worker = TaskWorker(adrain)
        else:

            def drain(emit: Emit) -> Any:
                for _ in it:
                    pass
                return finish()

            worker = ThreadWorker(drain)
        core.worker = worker
        core.pull = None
        worker.start(core)
        return worker

    # -- internals -------------------------------------------------------------------

    def _end(self, core: _Core[Any], exc: BaseException | None) -> None:
        run = self._run
        self._release()
        value = None
        if exc is None and run is not None:
            try:
                value = run.finish()
            except BaseException as error:
                exc = error
        core.record(exc, value)
        core.worker_ended()

    def _release(self) -> None:
        """Let go of the iterator, the run and the core: the core holds
        this worker, so a stream that ended is then freed by reference counting."""
        self._it = None
        self._run = None
        self._core = None

    def _close_sync(self) -> None:
        it = self._it
        self._release()
        if it is not None:
            it.close()

    def _cancel_on_loop(self) -> None:
        """On the consumer's loop: interrupt the step in progress, or close the iterator."""
        if self._stepping:
            task = self._task
            if task is not None and not self._interrupted:
                self._interrupted = True
                task.cancel()
            return
        it = self._it
        if it is None:
            return
        self._release()
        loop = self._loop
        assert loop is not None
        # Closing runs the generator's cleanup (an HTTP response's aclose): a task of its own.
        _closing.add(task := loop.create_task(it.aclose()))
        task.add_done_callback(_closing.discard)

    def _deadline(self) -> None:
        """The nearest deadline came during a step: stop the stream if one has passed
        (`enforce_deadlines` then cancels this worker), else wait for the next one."""
        self._timer = None
        core = self._core
        if core is None or self._loop is None:  # pragma: no cover - the step ended meanwhile
            return
        wait = core.enforce_deadlines()
        if wait and self._stepping:
            self._timer = self._loop.call_later(wait, self._deadline)


_NO_LOCK = threading.Lock()  # never taken

#: the `aclose()` tasks of async generators closed between steps, until they end
_closing: set[asyncio.Task[Any]] = set()


def cancel_task(task: asyncio.Task[Any] | None, loop: asyncio.AbstractEventLoop | None) -> None:
    """Cancel `task` (running on `loop`) from its loop, another thread, or a finaliser."""
    if task is None or loop is None or task.done():
        return
    _on_loop(loop, task.cancel)


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
    """Call `fn` now when on `loop`, else (another thread, a finaliser) soon on `loop`;
    nothing when `loop` is closed (nothing runs there any more)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    else:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn)


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
