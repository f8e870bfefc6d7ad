"""Asyncio callbacks: a Protocol's data_received runs on the event loop's own thread."""

import asyncio

import callstream


class Lines(asyncio.Protocol):
    def __init__(self, push: callstream.Push) -> None:
        self.push, self.buffer = push, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.push.emit(line.decode())  # never blocks the loop, whatever the sink

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.push.finish("eof")
        else:
            self.push.fail(exc)


async def main() -> None:
    async def serve(reader, writer) -> None:  # a local server for this example
        writer.write(b"".join(b"line %d\n" % i for i in range(100)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def start(push: callstream.Push) -> None:  # awaited on this loop
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: Lines(push), "127.0.0.1", port)
        push.on_cancel(transport.close)

    # A bounded "block" sink: the loop's emits go past the bound (nothing lost).
    async with callstream.afrom_push(start, sink=callstream.BoundedSink(8), timeout=10) as stream:
        lines = [line async for line in stream]
    assert len(lines) == 100 and stream.output == "eof"

    # An async producer waits for room with `await push.aemit(item)`.
    async def produce(push: callstream.Push) -> None:
        for i in range(20):
            await push.aemit(i)  # returns once item i is inside the bound
        push.finish()

    tasks = set()

    async def start_producer(push: callstream.Push) -> None:
        task = asyncio.get_running_loop().create_task(produce(push))
        tasks.add(task)
        push.on_cancel(task.cancel)

    async with callstream.afrom_push(start_producer, sink=callstream.BoundedSink(4)) as stream:
        print([i async for i in stream])
    server.close()
    await server.wait_closed()


asyncio.run(main())
