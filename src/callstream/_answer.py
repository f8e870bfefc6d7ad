"""Answer-only token streaming: which token text is an agent's answer (sans-I/O)."""

from __future__ import annotations

from typing import Any

from .events import Event, token_text

__all__ = ("AnswerFilter",)


def _has_tool_calls(output: Any) -> bool:
    return bool(getattr(output, "tool_calls", None) or getattr(output, "invalid_tool_calls", None))


class AnswerFilter:
    """Keeps the text of LLM calls that end without calling a tool.

    A call made with no tools bound streams at once. A call with tools bound
    holds its text back until either a tool-call chunk arrives (the text was a
    preamble such as "Let me look that up": it is dropped) or `holdback`
    characters arrived with none (it is the answer: released, then streamed),
    or the call ends (released unless the final message has tool calls).

    With `holdback=None` nothing is released before the call ends or a tool
    call starts: a preamble never leaks, at the price of the answer of a call
    with tools bound arriving in one piece when that call ends.
    """

    def __init__(self, holdback: int | None = 80) -> None:
        if holdback is not None and (type(holdback) is not int or holdback < 0):
            raise ValueError(
                f"holdback must be an int >= 0 (characters), or None to hold a call's text until it ends; "
                f"got {holdback!r}"
            )
        self.holdback = holdback
        self._held: dict[str, list[str]] = {}  # run id -> text held back
        self._dropped: set[str] = set()  # runs that turned out to call tools

    def feed(self, event: Any) -> list[str]:
        """The answer text this item releases (usually [] or [its text])."""
        if type(event) is not Event:  # a str item (from_callback) has no structure to judge by
            text = token_text(event)
            return [text] if text else []
        kind, run = event.kind, event.run_id
        if kind == "token":
            if run in self._dropped:
                return []
            chunk = event.chunk
            if chunk is not None and getattr(chunk, "tool_call_chunks", None):
                self._dropped.add(run)
                self._held.pop(run, None)
                return []
            held = self._held.get(run)
            if held is None:
                return [event.text] if event.text else []
            if event.text:
                held.append(event.text)
                if self.holdback is not None and sum(map(len, held)) >= self.holdback:
                    del self._held[run]
                    return ["".join(held)]
            return []
        if kind == "llm_start":
            if event.data.get("tools"):
                self._held[run] = []
            return []
        if kind in ("llm_end", "llm_error"):
            held = self._held.pop(run, None)
            self._dropped.discard(run)
            if held and kind == "llm_end" and not _has_tool_calls(event.data.get("output")):
                return ["".join(held)]
        return []
