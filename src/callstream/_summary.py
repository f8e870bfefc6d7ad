"""How a stream went: the live figures a run updates (`StreamStats`) and their snapshot (`Summary`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

__all__ = ("StreamStats", "Summary", "ToolCall")


@dataclass(frozen=True)
class ToolCall:
    """One tool call of the run, as it happened."""

    name: str
    args: Any
    result: Any = None
    error: str | None = None
    run_id: str = ""


@dataclass(frozen=True)
class Summary:
    """How a stream went; `stream.summary`, on every exit path.

    Times are seconds; `None` where nothing was measured (no token arrived,
    or the source reports no usage).
    """

    #: "new" (not started), "running", "completed", "interrupted" (a LangGraph graph
    #: paused on `interrupt()`, waiting for `Command(resume=...)`), "cancelled", "timeout" or "error"
    status: str
    #: the token text delivered to the consumer
    text: str
    #: every tool call, in the order they started
    tool_calls: tuple[ToolCall, ...]
    #: token usage summed over the LLM calls that reported it
    usage: dict[str, int] | None
    #: seconds from the start to the first token produced
    time_to_first_token: float | None
    #: tokens produced per second, from the first token to the last
    tokens_per_second: float | None
    #: the longest gap between two produced tokens
    longest_gap: float | None
    #: tokens produced that carry text: token events with a non-empty `text`
    #: (a model's empty closing chunk and tool-call chunks are not counted);
    #: for `from_callback`, the non-empty `str` items delivered
    tokens: int
    #: LLM calls started
    llm_calls: int
    #: the most items the sink held at once
    peak_sink_depth: int
    #: seconds from the start to now, or to the end
    duration: float
    #: the exception's type name for status "error" or "timeout"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tool arguments and results as given, or their `str`)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["tool_calls"] = [
            {"name": t.name, "args": _plain(t.args), "result": _plain(t.result), "error": t.error}
            for t in self.tool_calls
        ]
        return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    content = getattr(value, "content", None)
    return content if content is not None else str(value)


_STATS_LOCK = threading.Lock()


@dataclass
class StreamStats:
    """Live figures of a LangChain stream, updated by its callbacks.

    Cheap enough to keep on: a clock read and a few additions per token.
    """

    started: float = field(default_factory=monotonic)
    tokens: int = 0
    llm_calls: int = 0
    first_token: float | None = None
    last_token: float | None = None
    longest_gap: float = 0.0
    usage: dict[str, int] | None = None
    #: None until the first tool call (most streams have none: one object fewer each)
    tool_calls: dict[str, ToolCall] | None = None
    #: shared by every stream: tool calls and usage change a few times per run
    lock: threading.Lock = field(default=_STATS_LOCK, repr=False)

    def on_token(self) -> None:
        now = monotonic()
        last = self.last_token
        if last is None:
            self.first_token = now
        elif now - last > self.longest_gap:
            self.longest_gap = now - last
        self.last_token = now
        self.tokens += 1

    def on_llm_end(self, output: Any) -> None:
        usage = getattr(output, "usage_metadata", None)
        if usage:
            with self.lock:
                total = self.usage or {}
                for key in ("input_tokens", "output_tokens", "total_tokens"):
                    if isinstance(usage.get(key), int):
                        total[key] = total.get(key, 0) + usage[key]
                self.usage = total

    def on_tool_start(self, run_id: str, name: str, args: Any) -> None:
        with self.lock:
            if self.tool_calls is None:
                self.tool_calls = {}
            self.tool_calls[run_id] = ToolCall(name, args, run_id=run_id)

    def on_tool_end(self, run_id: str, result: Any = None, error: BaseException | None = None) -> None:
        with self.lock:
            calls = self.tool_calls
            if calls is not None and (call := calls.get(run_id)) is not None:
                err = f"{type(error).__name__}: {error}" if error is not None else None
                calls[run_id] = ToolCall(call.name, call.args, result, err, run_id)

    def summary(
        self, status: str, text: str, peak: int, error: BaseException | None, ended: float | None, tokens: int
    ) -> Summary:
        first, last = self.first_token, self.last_token
        rate = None
        if first is not None and last is not None and last > first:
            rate = (self.tokens - 1) / (last - first)
        with self.lock:
            calls = tuple(self.tool_calls.values()) if self.tool_calls else ()
            usage = dict(self.usage) if self.usage else None
        return Summary(
            status=status,
            text=text,
            tool_calls=calls,
            usage=usage,
            time_to_first_token=None if first is None else first - self.started,
            tokens_per_second=rate,
            longest_gap=self.longest_gap if self.tokens > 1 else None,
            tokens=self.tokens or tokens,
            llm_calls=self.llm_calls,
            peak_sink_depth=peak,
            duration=(ended or monotonic()) - self.started,
            error=type(error).__name__ if error is not None else None,
        )
