"""The exceptions callstream raises of its own.

```
Exception
 └── StreamError                       base of every callstream error
      ├── StreamTimeout (TimeoutError)  a total, first-token or idle limit was hit
      ├── StreamOverflow                a BoundedSink(overflow="error") was full
      ├── StreamNotFound (KeyError)     a relay knows no run under that key (never published, or expired)
      ├── StreamGap                     a relay no longer keeps (or never issued) the events after that id
      ├── ProducerLost                  a published run's producer died without recording its outcome
      ├── RemoteError                   a published run failed in another process (type and message)
      └── RelayFull                     a relay already keeps `max_runs` runs
BaseException
 └── Cancelled                         in the producer only: the consumer has left, stop here
```

The consumer sees a `StreamError` (or the producer's own exception). The
producer may see `Cancelled`, raised by `emit` once the stream was closed or
timed out: like `GeneratorExit`, it is not an `Exception`, so that neither a
producer's `except Exception:` nor a retry wrapper (`with_retry`,
`with_fallbacks`) catches it and carries on. `callstream.sinks.Cancelled` is
the same class.

An exception raised by the producer (the model, a chain step, a tool, your
callback function) is never wrapped: the consumer gets the very same object.
"""

from __future__ import annotations

from typing import Literal

__all__ = (
    "Cancelled",
    "ProducerLost",
    "RelayFull",
    "RemoteError",
    "StreamError",
    "StreamGap",
    "StreamNotFound",
    "StreamOverflow",
    "StreamTimeout",
)

TimeoutName = Literal["timeout", "first_token_timeout", "idle_timeout"]


class Cancelled(BaseException):
    """Raised in the producer by `emit` (a sink's `put`) once the consumer has left.

    The stream was closed (a `break` out of a `with`, `close()`, garbage
    collection) or hit a time limit, and the producer stops at this callback.
    It derives from `BaseException`, like `GeneratorExit`, and not from
    `StreamError`: a producer's `except Exception:`, and LangChain's
    `with_retry`/`with_fallbacks`, must not swallow the cancellation and call
    the model again. Sink authors raise it from `put` after `close()`; nobody
    else should catch it.
    """


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


class StreamNotFound(StreamError, KeyError):
    """A relay knows no run under this key: never published here, or expired (`ttl`).

    A `KeyError` too, so `except KeyError` in a lookup keeps working. Under
    several worker processes, a `MemoryRelay` knows only the runs published
    in its own process (use `callstream.redis.RedisRelay` there).

    Attributes:
        key: the key asked for, shortened (a key is a bearer secret).
    """

    def __init__(self, key: str) -> None:
        self.key = short_key(key)
        StreamError.__init__(self, f"no published run under key {self.key!r} (never published here, or expired)")

    def __str__(self) -> str:  # KeyError.__str__ would repr() the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[StreamNotFound], tuple[str]]:
        return (type(self), (self.key,))


class StreamGap(StreamError):
    """The events after `after` are not kept (trimmed by `maxlen`) or that id was never issued.

    Raised instead of silently resuming from a later event: the subscriber
    would miss events. Subscribe again with `after=None` to replay what is kept,
    or treat the run as lost to this client.
    """


class ProducerLost(StreamError):
    """A published run's producer stopped without recording its outcome.

    The worker was killed, the machine lost, or a reserved run was never
    started within `queue_timeout`. Subscribers get it within the relay's
    `lease` seconds, never a hang.
    """


class RemoteError(StreamError):
    """A published run failed in another process.

    The original exception cannot cross the wire (only JSON does); this names
    its type and message.

    Attributes:
        type: the original exception's qualified type name (`"ValueError"`).
        message: its `str()`.
    """

    def __init__(self, type: str, message: str) -> None:
        self.type = type
        self.message = message
        super().__init__(f"{type}: {message}" if message else type)

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (RemoteError, (self.type, self.message))


class RelayFull(StreamError):
    """A relay already keeps `max_runs` runs (running, queued and retained).

    The reference apps answer 429. Runs are released `ttl` seconds after they end.
    """


def short_key(key: str) -> str:
    """A key as logs and messages show it: its first 6 characters (keys are bearer secrets)."""
    return key if len(key) <= 8 else key[:6] + "…"
