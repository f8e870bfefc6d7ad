"""Quickstart: the same with asyncio (FastAPI, notebooks)."""

import asyncio

import callstream
from callstream.testing import ScriptedChatModel

model = ScriptedChatModel(responses=["Hello from an async stream."])


async def main() -> None:
    async with callstream.aiter_callbacks(model, "hi", first_token_timeout=10) as stream:
        async for token in stream.tokens():
            print(token, end="", flush=True)
    print()
    assert stream.output.content == "Hello from an async stream."


asyncio.run(main())
