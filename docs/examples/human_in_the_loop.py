"""Human in the loop: the agent pauses before its tool runs, a person decides, the run resumes."""

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.types import Command

import callstream
from callstream.testing import ScriptedChatModel, agent_script


@tool
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    write = get_stream_writer()  # progress for the UI: arrives as `custom` events
    write({"progress": "connecting"})
    return f"sent to {to}"


model = ScriptedChatModel(
    respond=agent_script(tool="send_email", args={"to": "bob@example.com", "subject": "Hi"}, answer="Done: {result}.")
)
agent = create_agent(
    model,
    tools=[send_email],
    middleware=[HumanInTheLoopMiddleware(interrupt_on={"send_email": True})],
    checkpointer=InMemorySaver(),  # interrupts need one: the paused run is saved there
)
config = {"configurable": {"thread_id": "conversation-42"}}

# 1. The run pauses: an `interrupt` event carries the question; nothing is an error.
with callstream.iter_callbacks(agent, {"messages": [("user", "Email Bob")]}, config) as stream:
    for event in stream:
        if event.kind == "interrupt":
            (asked,) = event.data["interrupts"]
            request = asked["value"]["action_requests"][0]
            print(f"needs approval: {request['name']}({request['args']})  [interrupt id {asked['id']}]")
assert stream.status == "interrupted" and stream.summary.status == "interrupted"
assert "__interrupt__" in stream.output  # what agent.invoke(...) returns

# 2. The decision resumes the same thread: the tool runs, the answer streams.
decision = {"decisions": [{"type": "approve"}]}  # or "edit" / "reject"
with callstream.iter_callbacks(agent, Command(resume=decision), config) as stream:
    for event in stream:
        if event.kind == "custom":
            print(f"  {event.name}: {event.data['progress']}")
        elif event.kind == "token":
            print(event.text, end="")
print()
assert stream.status == "completed"
assert stream.output["messages"][-1].content == "Done: sent to bob@example.com."
