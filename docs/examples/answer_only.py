"""Stream only the agent's answer, then read the summary."""

from langchain.agents import create_agent
from langchain_core.tools import tool

import callstream
from callstream.testing import ScriptedChatModel, agent_script


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"18°C in {city}"


model = ScriptedChatModel(
    respond=agent_script(
        tool="get_weather",
        args={"city": "Paris"},
        preamble="Let me look that up. ",  # spoken before the tool call: not part of the answer
        answer="It is {result} right now.",
    )
)
agent = create_agent(model, tools=[get_weather])

stream = callstream.iter_callbacks(agent, {"messages": [("user", "Weather in Paris?")]})
answer = "".join(stream.tokens(answer_only=True))
print(answer)
assert answer == "It is 18°C in Paris right now."

summary = stream.summary
print(summary.status, summary.llm_calls, [(t.name, t.args) for t in summary.tool_calls])
assert summary.status == "completed" and summary.llm_calls == 2
assert summary.tool_calls[0].name == "get_weather"
