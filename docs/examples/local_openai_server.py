"""Tests over real HTTP, on the local OpenAI-compatible server."""

from langchain_openai import ChatOpenAI

import callstream
from callstream.testing import OpenAIServer

server = OpenAIServer(tokens=5).start()  # on 127.0.0.1, a free port
try:
    model = ChatOpenAI(
        base_url=server.base_url,
        api_key="test",
        model="scripted:tag=answer",
    )
    text = "".join(callstream.iter_callbacks(model, "hi").tokens())
    assert text == "w0 w1 w2 w3 w4 "

    # A client that breaks off: the server sees its request closed early.
    slow = ChatOpenAI(
        base_url=server.base_url,
        api_key="test",
        model="scripted:tokens=1000,delay_ms=5,tag=early",
    )
    with callstream.iter_callbacks(slow, "hi") as stream:
        for _token in stream.tokens():
            break
    (request,) = server.wait_ended("early")
    assert request["sent"] < 1000 and not request["done"]
    print("the server sent", request["sent"], "of 1000 chunks")
finally:
    server.stop()
