"""The public surface is pinned: adding or removing a name is a decision, not an accident."""

from __future__ import annotations

import importlib

import callstream

EXPECTED_ALL = [
    "AsyncStream",
    "BoundedSink",
    "DequeSink",
    "Event",
    "MemoryRelay",
    "ProducerLost",
    "Push",
    "QueueSink",
    "RelayFull",
    "RemoteError",
    "Sink",
    "SinkStatistics",
    "Stream",
    "StreamError",
    "StreamGap",
    "StreamNotFound",
    "StreamOverflow",
    "StreamTimeout",
    "Summary",
    "ToolCall",
    "afrom_callback",
    "afrom_push",
    "aiter_callbacks",
    "from_callback",
    "from_push",
    "iter_callbacks",
]

PUBLIC_MODULES = [
    "callstream.errors",
    "callstream.events",
    "callstream.sinks",
    "callstream.testing",
    "callstream.testing.openai_server",
    "callstream.cli",
    "callstream.redis",
]


def test_all_is_the_documented_surface() -> None:
    assert sorted(callstream.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(callstream, name) is not None


def test_public_names_say_callstream_in_tracebacks() -> None:
    assert callstream.StreamTimeout.__module__ == "callstream"
    assert repr(callstream.Stream).startswith("<class 'callstream.Stream'")


def test_public_modules_have_tuple_all() -> None:
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        assert isinstance(module.__all__, tuple), name
        for attr in module.__all__:
            assert hasattr(module, attr), f"{name}.{attr}"


def test_error_tree() -> None:
    assert issubclass(callstream.StreamTimeout, callstream.StreamError)
    assert issubclass(callstream.StreamTimeout, TimeoutError)
    assert issubclass(callstream.StreamOverflow, callstream.StreamError)
    e = callstream.StreamTimeout("idle_timeout", 0.5)
    assert e.limit == "idle_timeout" and e.seconds == 0.5 and "idle_timeout=0.5" in str(e)
    import pickle

    assert pickle.loads(pickle.dumps(e)).limit == "idle_timeout"


def test_cancelled_is_no_stream_error() -> None:
    # F18: an Exception here would be caught, and the model called again, by with_retry / with_fallbacks.
    import callstream.errors
    import callstream.sinks

    cancelled = callstream.errors.Cancelled
    assert callstream.sinks.Cancelled is cancelled  # re-exported where it was
    assert issubclass(cancelled, BaseException)
    assert not issubclass(cancelled, Exception) and not issubclass(cancelled, callstream.StreamError)
    assert "Cancelled" in (callstream.errors.__doc__ or "")


def test_faces_are_final() -> None:
    assert getattr(callstream.Stream, "__final__", False) and getattr(callstream.AsyncStream, "__final__", False)


def test_relay_errors() -> None:
    import pickle

    for cls in (
        callstream.StreamNotFound,
        callstream.StreamGap,
        callstream.ProducerLost,
        callstream.RemoteError,
        callstream.RelayFull,
    ):
        assert issubclass(cls, callstream.StreamError)
    assert issubclass(callstream.StreamNotFound, KeyError)
    missing = callstream.StreamNotFound("k" * 22)
    assert str(missing) == "no published run under key 'kkkkkk…' (never published here, or expired)"
    assert pickle.loads(pickle.dumps(missing)).key == missing.key
    remote = pickle.loads(pickle.dumps(callstream.RemoteError("ValueError", "boom")))
    assert (remote.type, remote.message, str(remote)) == ("ValueError", "boom", "ValueError: boom")


def test_both_relays_have_the_same_faces() -> None:
    from callstream.redis import RedisRelay

    faces = ["publish", "run", "subscribe", "reserve", "cancel", "status"]
    for name in faces + [f"a{name}" for name in faces]:
        assert callable(getattr(callstream.MemoryRelay, name)) and callable(getattr(RedisRelay, name)), name
    assert RedisRelay.__module__ == "callstream.redis" and issubclass(RedisRelay, callstream.MemoryRelay.__mro__[1])
