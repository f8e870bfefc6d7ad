"""A tool-using agent: tokens, tool calls and tool results as they happen."""

from langchain.agents import create_agent
from langchain_core.tools import tool

import callstream
from callstream.testing import ScriptedChatModel, agent_script


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"18°C in {city}"


model = ScriptedChatModel(respond=agent_script(tool="get_weather", args={"city": "Paris"}, answer="It is {result}."))
agent = create_agent(model, tools=[get_weather])

with callstream.iter_callbacks(agent, {"messages": [("user", "Weather in Paris?")]}) as stream:
    for event in stream:
        if event.kind == "tool_start":
            print(f"\n→ {event.name}({event.data['input']})")
        elif event.kind == "tool_end":
            print(f"← {event.data['output'].content}")
        elif event.kind == "token":
            print(event.text, end="")
print()
assert stream.output["messages"][-1].content == "It is 18°C in Paris."
