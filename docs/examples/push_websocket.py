"""A push-style SDK: websocket-client calls back from its own thread."""

import threading

import websocket  # pip install websocket-client
from websockets.sync.server import serve  # a local server for this example

import callstream


def handler(connection) -> None:  # the server: five messages, then a normal close
    for i in range(5):
        connection.send(f"message {i}")
    connection.close()


server = serve(handler, "127.0.0.1", 0)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"


def start(push: callstream.Push) -> None:
    def on_error(ws, exc) -> None:
        if getattr(exc, "status_code", None) != 1000:  # websocket-client reports a normal close here too
            push.fail(exc)

    ws = websocket.WebSocketApp(
        url,
        on_message=lambda ws, message: push.emit(message),
        on_error=on_error,
        on_close=lambda ws, code, reason: push.finish(code),
    )

    def stop() -> None:  # called once if the consumer leaves early or a timeout fires
        ws.keep_running = False
        if ws.sock is not None:
            ws.sock.abort()  # wakes run_forever at once (ws.close() can leave it asleep for 10 s)

    push.on_cancel(stop)
    threading.Thread(target=ws.run_forever, daemon=True).start()


with callstream.from_push(start, idle_timeout=10) as stream:
    for message in stream:
        print(message)
assert stream.output == 1000  # the close code given to push.finish()

for i, _message in enumerate(callstream.from_push(start)):
    if i == 1:
        break  # stop() runs once; later on_message calls are silent no-ops
server.shutdown()
