"""A Haystack Agent with a tool, streamed: tokens, tool calls and tool results."""

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # these examples run offline

from haystack.components.agents import Agent
from haystack.components.generators.chat import MockChatGenerator  # any chat generator works
from haystack.dataclasses import ChatMessage, ToolCall
from haystack.tools import Tool

from callstream.haystack import iter_run


def get_weather(city: str) -> str:
    return f"18°C in {city}"


weather = Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    function=get_weather,
)
model = MockChatGenerator(  # a scripted model: first a tool call, then the answer
    responses=[
        ChatMessage.from_assistant(tool_calls=[ToolCall(tool_name="get_weather", arguments={"city": "Paris"})]),
        "It is 18°C in Paris.",
    ]
)
agent = Agent(chat_generator=model, tools=[weather])

with iter_run(agent, {"messages": [ChatMessage.from_user("Weather in Paris?")]}, timeout=60) as stream:
    for event in stream:
        if event.kind == "tool_start":
            print(f"→ {event.name}({event.data['input']})")
        elif event.kind == "tool_end":
            print(f"← {event.data['output']}")
        elif event.kind == "token":
            print(event.text, end="", flush=True)
print()
assert stream.output["last_message"].text == "It is 18°C in Paris."  # what agent.run() returns
assert [call.name for call in stream.summary.tool_calls] == ["get_weather"]
