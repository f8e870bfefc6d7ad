"""callstream: callback-based streaming as iterators, sync and async.

```python
with callstream.from_callback(producer) as stream:
    for item in stream:
        ...
```
"""

from __future__ import annotations

from ._astream import AsyncStream as AsyncStream
from ._astream import afrom_callback as afrom_callback
from ._push import Push as Push
from ._push import afrom_push as afrom_push
from ._push import from_push as from_push
from ._relay import MemoryRelay as MemoryRelay
from ._runnable import aiter_callbacks as aiter_callbacks
from ._runnable import iter_callbacks as iter_callbacks
from ._stream import Stream as Stream
from ._stream import from_callback as from_callback
from ._summary import Summary as Summary
from ._summary import ToolCall as ToolCall
from .errors import ProducerLost as ProducerLost
from .errors import RelayFull as RelayFull
from .errors import RemoteError as RemoteError
from .errors import StreamError as StreamError
from .errors import StreamGap as StreamGap
from .errors import StreamNotFound as StreamNotFound
from .errors import StreamOverflow as StreamOverflow
from .errors import StreamTimeout as StreamTimeout
from .events import Event as Event
from .sinks import BoundedSink as BoundedSink
from .sinks import DequeSink as DequeSink
from .sinks import QueueSink as QueueSink
from .sinks import Sink as Sink
from .sinks import SinkStatistics as SinkStatistics

__version__ = "0.1.0"

__all__ = [
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

# Tracebacks and reprs say `callstream.StreamTimeout`, not `callstream.errors...`.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("callstream."):
        try:
            _obj.__module__ = "callstream"
        except (AttributeError, TypeError):  # pragma: no cover
            pass
del _name, _obj
