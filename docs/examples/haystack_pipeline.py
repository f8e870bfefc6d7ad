"""A pipeline with two streaming generators: each event names its component."""

import asyncio
import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # these examples run offline

from haystack import Pipeline
from haystack.components.generators.chat import MockChatGenerator
from haystack.dataclasses import ChatMessage

from callstream.haystack import aiter_run, iter_run


def build(on_chunk=None) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component("draft", MockChatGenerator(responses="A first draft."))
    pipeline.add_component("review", MockChatGenerator(responses="A reviewed answer.", streaming_callback=on_chunk))
    pipeline.connect("draft.replies", "review.messages")
    return pipeline


seen = []
data = {"draft": {"messages": [ChatMessage.from_user("Write something.")]}}
with iter_run(build(on_chunk=seen.append), data) as stream:
    for event in stream:
        print(f"[{event.metadata['component']}] {event.text!r}")
assert stream.output["review"]["replies"][0].text == "A reviewed answer."  # == pipeline.run(data)
assert len(seen) == 3  # the component's own streaming_callback still ran


async def main() -> None:  # the async face runs pipeline.run_async on your loop
    async with aiter_run(build(), data, include_names=["review"]) as stream:  # only this component
        print("".join([token async for token in stream.tokens()]))


asyncio.run(main())
