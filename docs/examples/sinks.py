"""Sinks: pick the buffer between the model and your loop."""

import time

import callstream


def fast_producer(emit) -> None:
    for i in range(1000):
        emit(f"{i} ")


# Bounded with coalescing: a slow consumer gets fewer, larger pieces; no text is lost.
sink = callstream.BoundedSink(maxsize=8, overflow="coalesce")
with callstream.from_callback(fast_producer, sink=sink) as stream:
    pieces = []
    for piece in stream:
        pieces.append(piece)
        time.sleep(0.001)
assert "".join(pieces) == "".join(f"{i} " for i in range(1000))
print(len(pieces), "pieces;", sink.statistics())
