"""The exceptions callstream raises of its own.

```
StreamError                       base of every callstream error
 ├── StreamTimeout (TimeoutError)  a total, first-token or idle limit was hit
 └── StreamOverflow                a BoundedSink(overflow="error") was full
```

An exception raised by the producer (the model, a chain step, a tool, your
callback function) is never wrapped: the consumer gets the very same object.
"""

from __future__ import annotations

from typing import Literal

__all__ = ("StreamError", "StreamOverflow", "StreamTimeout")

TimeoutName = Literal["timeout", "first_token_timeout", "idle_timeout"]


class StreamError(Exception):
    """Base class of the errors callstream raises itself.

    Errors raised by the producer are re-raised unchanged and do not derive
    from this class.
    """


class StreamTimeout(StreamError, TimeoutError):
    """A stream exceeded one of its time limits.

    Raised in the consumer once every event produced before the deadline has
    been delivered. The producer is stopped at its next callback.

    Attributes:
        limit: which limit was hit: `"timeout"` (the whole stream),
            `"first_token_timeout"` or `"idle_timeout"`.
        seconds: the configured value of that limit.
    """

    def __init__(self, limit: TimeoutName, seconds: float) -> None:
        self.limit: TimeoutName = limit
        self.seconds = seconds
        what = {
            "timeout": "the stream did not finish",
            "first_token_timeout": "no first token arrived",
            "idle_timeout": "no event arrived",
        }[limit]
        super().__init__(f"{what} within {seconds:g} s ({limit}={seconds:g})")

    def __reduce__(self) -> tuple[type[StreamTimeout], tuple[TimeoutName, float]]:
        return (type(self), (self.limit, self.seconds))


class StreamOverflow(StreamError):
    """A `BoundedSink(overflow="error")` was full when the producer emitted.

    Raised in the producer at the `emit` (or callback) that overflowed, so the
    run stops there; the consumer receives it after every event buffered
    before it.
    """
