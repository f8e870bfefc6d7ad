"""FastAPI reference app: `uvicorn adapters.fastapi.app:app` (from the repo root).

Streams with the async face (`aiter_callbacks`): Starlette would run a sync
iterator one `next()` per worker thread and never close it on disconnect.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

import callstream
import callstream.openai
from adapters import shared
from callstream.sse import SSE_HEADERS, asse

app = FastAPI(title="callstream reference app")


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return shared.INDEX_HTML


@app.get("/health")
def health() -> dict[str, Any]:  # sync on purpose: it must not starve behind streams
    return shared.health()


@app.get("/stream")
async def stream(q: str = "") -> StreamingResponse:
    events = callstream.aiter_callbacks(shared.chain(), shared.chain_input(q))
    return StreamingResponse(shared.atracked(asse(events, heartbeat=shared.HEARTBEAT)), headers=dict(SSE_HEADERS))


@app.get("/native")
async def native(q: str = "") -> StreamingResponse:
    return StreamingResponse(shared.anative_sse(q), headers=dict(SSE_HEADERS))


@app.get("/agent")
async def agent(q: str = "") -> StreamingResponse:
    events = callstream.aiter_callbacks(shared.agent(), shared.agent_input(q))
    return StreamingResponse(shared.atracked(asse(events, heartbeat=shared.HEARTBEAT)), headers=dict(SSE_HEADERS))


@app.get("/approval")
async def approval(q: str = "", thread: str = "") -> Any:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    try:
        config = shared.approval_thread(thread)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    events = callstream.aiter_callbacks(shared.approval_agent(), shared.approval_input(q), config)
    return StreamingResponse(shared.atracked(asse(events, heartbeat=shared.HEARTBEAT)), headers=dict(SSE_HEADERS))


@app.post("/approval/{thread}/decision")
async def approval_decision(thread: str, request: Request) -> Any:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    try:
        config, resume = shared.approval_thread(thread), shared.decision(await request.json())
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    events = callstream.aiter_callbacks(shared.approval_agent(), resume, config)
    return StreamingResponse(shared.atracked(asse(events, heartbeat=shared.HEARTBEAT)), headers=dict(SSE_HEADERS))


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    body = await request.json()
    inputs = shared.chain_input(shared.question_of(body))
    model = body.get("model") or shared.MODEL_NAME
    if body.get("stream"):
        events = callstream.aiter_callbacks(shared.chain(), inputs)
        wire = callstream.openai.asse(events, model=model, heartbeat=shared.HEARTBEAT)
        return StreamingResponse(shared.atracked(wire), headers=dict(SSE_HEADERS))
    async with callstream.aiter_callbacks(shared.chain(), inputs) as events:
        text = "".join([t async for t in events.tokens()])
    return JSONResponse(callstream.openai.chat_completion(text, model=model))
