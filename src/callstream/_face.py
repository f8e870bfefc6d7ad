"""`_BaseStream`: what the sync and async faces share over one `_Core`.

The text delivered so far, the status, the output, the summary, closing, the
`repr`, and the per-batch generator behind `tokens()` (plain and answer-only):
a face's `tokens()` loop only waits for the next batch, in its own way, and
hands it to `_texts`, as httpx's sync and async auth flows drive one generator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Final, Generic, Literal, TypeVar

from ._answer import AnswerFilter
from ._core import Status, _Core, _State, add_note
from ._summary import Summary
from .events import Event, token_text
from .sinks import DequeSink, QueueSink, SinkStatistics

__all__ = ("EMPTY", "IDLE", "_BaseStream")

T = TypeVar("T")

EMPTY: Final[deque[Any]] = deque()

#: What the private idle-aware iterators yield when a heartbeat is due.
IDLE: Final = object()

#: The sinks whose items only the consumer sees (no user hook looks at them):
#: `tokens()` may have token texts put in them instead of events (`_Core.texts_only`).
_TEXT_SINKS: Final = (DequeSink, QueueSink)


class _BaseStream(Generic[T]):
    """What both faces share: state, text, output, summary, close, repr."""

    _kind = "stream"

    def __init__(self, core: _Core[Any]) -> None:
        self._core = core
        self._pending: deque[Any] = EMPTY
        self._parts: list[str] = []
        self._merged = 0  # parts folded into one by `text`: still counted as tokens
        self._delivered = 0
        # who iterates: None (nobody yet), "items" (the stream itself) or "tokens"
        self._mode: Literal["items", "tokens"] | None = None

    @property
    def text(self) -> str:
        """The token text delivered so far, concatenated (partial after an error)."""
        if len(self._parts) > 1:
            self._merged += len(self._parts) - 1
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def _tokens_delivered(self) -> int:
        return len(self._parts) + self._merged

    @property
    def status(self) -> Status:
        """`"new"` (not started: nothing runs until the stream is entered or
        iterated), `"running"`, `"completed"`, `"interrupted"` (a LangGraph graph
        paused on `interrupt()`: the run ended normally, `output` holds
        `"__interrupt__"`), `"error"`, `"timeout"` or `"cancelled"`."""
        core = self._core
        return "new" if core.state is _State.NEW else core.status

    @property
    def output(self) -> Any:
        """What the producer returned (for a runnable: what `invoke` returns).

        Raises:
            RuntimeError: the stream has not completed (still running, or it
                ended with an error, a timeout or a cancellation). An
                interrupted stream completed: its output is what `invoke`
                returns, `"__interrupt__"` included.
        """
        core = self._core
        if core.status == "completed" or core.status == "interrupted":
            return core.value
        if core.state is _State.NEW:
            raise RuntimeError("no output yet: the stream has not started; iterate it to the end first")
        if core.status == "running":
            raise RuntimeError("no output yet: the stream is still running; iterate it to the end first")
        cause = core.value if isinstance(core.value, BaseException) else None
        raise RuntimeError(f"no output: the stream ended with status {core.status!r}") from cause

    def statistics(self) -> SinkStatistics:
        """The buffer, now: items buffered and their peak, producers and
        consumers waiting, items dropped or merged (see `SinkStatistics`).

        A snapshot of the transport, for tests, logs and dashboards (is the
        consumer keeping up?); what the run produced is in `summary`.
        """
        return self._core.statistics()

    @property
    def summary(self) -> Summary:
        """The run: status, text, tool calls, usage, time to first token,
        tokens/s, longest gap, LLM calls, peak sink depth (see `Summary`).

        Available on every exit path, and while the stream runs: each access
        is a new snapshot (its `status` is `"running"` until the end), so a
        progress display reads `summary.tokens` or `summary.tool_calls` as
        they grow.
        """
        core = self._core
        error = core.value if core.status in ("error", "timeout") else None
        peak = core.statistics().peak
        return core.stats.summary(self.status, self.text, peak, error, core.t_end, self._tokens_delivered())

    def close(self) -> None:
        """Stop the producer at its next callback and end iteration.

        Returns at once, without waiting for the producer. Idempotent; safe
        from any thread, and from inside the producer.
        """
        self._pending.clear()  # undelivered items go now, not when the stream is collected
        self._core.close()

    def _check_enter(self) -> None:
        state = self._core.state
        if state is _State.RUNNING:
            raise RuntimeError(f"Cannot enter a {self._kind} more than once, or after iterating it.")
        if state is _State.DONE:
            raise RuntimeError(f"Cannot enter a {self._kind} once it has been closed or has ended.")

    def _claim(self, mode: Literal["items", "tokens"]) -> None:
        if self._mode is None:
            self._mode = mode
        elif self._mode != mode:
            raise RuntimeError(
                "iterate either the stream (events) or its tokens(), not both: "
                "each item is delivered once, so mixing them would split the stream"
            )

    def _claim_tokens(self, answers: AnswerFilter | None) -> None:
        """Claim the stream for `tokens()`. Without an answer filter, and over a sink
        of ours that neither drops nor merges, only the text of token items is read:
        the producer may then put a token's text instead of its `Event`."""
        self._claim("tokens")
        if answers is None and type(self._core.sink) in _TEXT_SINKS:
            self._core.texts_only = True

    def _texts(self, batch: deque[Any], answers: AnswerFilter | None) -> Iterator[Any]:
        """One batch's worth of `tokens()`: every item counted, its token text
        kept for `text`, and the text `tokens()` yields (with `answers`, only the
        answer's). `batch` is `self._pending`, so `close()` empties it."""
        parts = self._parts
        pop = batch.popleft
        if answers is None:
            while batch:
                item = pop()
                self._delivered += 1
                if type(item) is Event:  # token_text(), inlined: this runs per token
                    text = item.text if item.kind == "token" else None
                else:
                    text = item if type(item) is str else None
                if text:
                    parts.append(text)
                    yield text
            return
        feed = answers.feed
        while batch:
            item = pop()
            self._delivered += 1
            if text := token_text(item):
                parts.append(text)
            yield from feed(item)

    def _pulled_buffer(self) -> deque[Any]:
        """`tokens()` of a model this consumer steps itself (`PullWorker`), no answer
        filter, no time limit, a `DequeSink`: the sink's own buffer, which the face
        reads after each step, in the loop that steps (a step fires about one event:
        a batch or a generator per step would cost more than the event). Once the
        run ended, was closed or handed to a worker, the face goes the general way.
        """
        core = self._core
        if core.state is _State.NEW:
            core.start()
        buf = core.sink.take(0)
        self._pending = buf  # close() empties it
        return buf

    def _can_pull_texts(self, answers: AnswerFilter | None) -> bool:
        core = self._core
        return answers is None and core.pull is not None and core.timeouts is None and type(core.sink) is DequeSink

    def _note_consumer_error(self, exc: BaseException | None) -> None:
        pending = self._core.pending_error()
        if exc is not None and pending is not None and pending is not exc:
            add_note(exc, f"callstream: the producer had also raised {pending!r} (not delivered)")

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and core.state is not _State.DONE:
            try:
                core.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        status = self.status
        shown = "new (not started)" if status == "new" else status
        return f"<{type(self).__name__} {shown}, delivered: {self._delivered}, sink: {self._core.sink!r}>"
