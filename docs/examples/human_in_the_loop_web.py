"""Human in the loop over SSE: one route starts the run, one posts the decision and streams the rest."""

from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import callstream
from callstream.sse import SSE_HEADERS, asse
from callstream.testing import ScriptedChatModel, agent_script


@tool
def refund(order: str) -> str:
    """Refund an order."""
    return f"order {order} refunded"


model = ScriptedChatModel(respond=agent_script(tool="refund", args={"order": "A-17"}, answer="{result}."), chunk_size=8)
agent = create_agent(
    model,
    tools=[refund],
    middleware=[HumanInTheLoopMiddleware(interrupt_on={"refund": {"allowed_decisions": ["approve", "reject"]}})],
    checkpointer=InMemorySaver(),  # one process; use a shared checkpointer (Postgres, Redis) behind several
)
app = FastAPI()


@app.post("/chat/{thread_id}")
async def chat(thread_id: str, body: dict[str, Any]) -> StreamingResponse:
    # ... check that the caller owns thread_id here ...
    config = {"configurable": {"thread_id": thread_id}}
    stream = callstream.aiter_callbacks(agent, {"messages": [("user", body["message"])]}, config)
    return StreamingResponse(asse(stream), headers=SSE_HEADERS)  # ends with `interrupt`, then `done`


@app.post("/chat/{thread_id}/decision")
async def decide(thread_id: str, body: dict[str, Any]) -> StreamingResponse:
    config = {"configurable": {"thread_id": thread_id}}
    resume = Command(resume={"decisions": [{"type": body["decision"]}]})
    return StreamingResponse(asse(callstream.aiter_callbacks(agent, resume, config)), headers=SSE_HEADERS)


client = TestClient(app)
paused = client.post("/chat/t1", json={"message": "Refund my order A-17"}).text
print(paused)
assert "event: interrupt" in paused and '"status": "interrupted"' in paused
resumed = client.post("/chat/t1/decision", json={"decision": "approve"}).text
print([line for line in resumed.splitlines() if line.startswith("event:")])
assert "event: tool_end" in resumed and '"status": "completed"' in resumed
