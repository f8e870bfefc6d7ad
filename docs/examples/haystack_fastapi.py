"""FastAPI: a Haystack agent served as Server-Sent Events (the web encoders take it unchanged)."""

import asyncio
import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # these examples run offline

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from haystack.components.agents import Agent
from haystack.components.generators.chat import MockChatGenerator
from haystack.dataclasses import ChatMessage

from callstream.haystack import aiter_run
from callstream.sse import SSE_HEADERS, asse

app = FastAPI()


def make_agent() -> Agent:  # one per request: its generator's async client belongs to one loop
    return Agent(chat_generator=MockChatGenerator(responses="Streamed by Haystack and FastAPI."))


@app.get("/chat")
async def chat(q: str = "hi") -> StreamingResponse:
    events = aiter_run(make_agent(), {"messages": [ChatMessage.from_user(q)]}, idle_timeout=30)
    return StreamingResponse(asse(events, heartbeat=15), headers=dict(SSE_HEADERS))


async def main() -> None:  # serve with `uvicorn docs.examples.haystack_fastapi:app`; here, in-process
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        response = await client.get("/chat", params={"q": "hello"})
    print(response.text)
    assert "event: token" in response.text and "event: done" in response.text


if __name__ == "__main__":
    asyncio.run(main())
