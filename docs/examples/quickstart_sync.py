"""Quickstart: stream a chain's tokens, synchronously."""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import callstream
from callstream.testing import ScriptedChatModel  # swap in ChatOpenAI(...) or any chat model

model = ScriptedChatModel(responses=["Otters hold hands while they sleep."])
chain = ChatPromptTemplate.from_template("Tell me a fact about {animal}.") | model | StrOutputParser()

for token in callstream.iter_callbacks(chain, {"animal": "otters"}).tokens():
    print(token, end="", flush=True)
print()

# With `with`, you also get the output and every event (model, tools, chains):
with callstream.iter_callbacks(chain, {"animal": "otters"}, timeout=30) as stream:
    for event in stream:
        if event.kind == "token":
            print(event.text, end="")
print()
assert stream.output == "Otters hold hands while they sleep."
