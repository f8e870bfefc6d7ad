"""Coming from the OpenAI SDK: the same chunk objects, from any LangChain runnable."""

import callstream
import callstream.openai
from callstream.testing import ScriptedChatModel

model = ScriptedChatModel(responses=["Same shape as stream=True."], chunk_size=5)

for chunk in callstream.openai.chunks(callstream.iter_callbacks(model, "hi")):
    print(chunk.choices[0].delta.content or "", end="")
print()

# The wire format an OpenAI client can read unchanged (data: {...} ... data: [DONE]):
wire = b"".join(callstream.openai.sse(callstream.iter_callbacks(model, "hi")))
assert wire.endswith(b"data: [DONE]\n\n")
