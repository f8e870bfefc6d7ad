"""An agent behind an OpenAI-shaped stream: the tools it ran are shown, never handed to the client to run."""

from langchain.agents import create_agent
from langchain_core.tools import tool

import callstream
import callstream.openai
from callstream.testing import ScriptedChatModel, agent_script


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"18°C and sunny in {city}"


model = ScriptedChatModel(
    respond=agent_script(tool="get_weather", args={"city": "Paris"}, answer="It is {result}."), chunk_size=4
)
agent = create_agent(model, tools=[get_weather])
stream = callstream.iter_callbacks(agent, {"messages": [("user", "Weather in Paris?")]})

for chunk in callstream.openai.chunks(stream, tool_calls=True, include_usage=True):
    if not chunk.choices:  # the last chunk: usage, as with stream_options={"include_usage": True}
        print("\nusage:", chunk.usage)
        continue
    delta = chunk.choices[0].delta
    extra = delta.model_extra or {}
    for call in extra.get("executed_tool_calls", []):  # ran by the agent: show it, do not run it again
        print(f"[ran {call['function']['name']}({call['function']['arguments']})]")
    for result in extra.get("tool_results", []):
        print(f"[{result['name']} -> {result['content']}]")
    assert not delta.tool_calls  # nothing for an OpenAI client's tool loop to run
    print(delta.content or "", end="")
    if chunk.choices[0].finish_reason:
        assert chunk.choices[0].finish_reason == "stop"
