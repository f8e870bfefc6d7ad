"""Publish a run, drop the connection halfway, resume by the last event id, watch from a second client."""

import callstream
from callstream.testing import ScriptedChatModel

model = ScriptedChatModel(responses=["Streams that outlive their connection."], chunk_size=4)
relay = callstream.MemoryRelay(ttl=600)  # one per process, shared by every request

# POST /runs: start the run detached; the key goes back to the client.
key = relay.publish(callstream.iter_callbacks(model, "Say something."))

# GET /runs/{key}/stream: the client reads a few events, then its connection drops.
last_id = None
with relay.subscribe(key) as sub:
    for event in sub:
        print(event.text, end="|", flush=True)
        last_id = event.id
        if event.kind == "token" and event.text and int(event.id) >= 4:
            break  # the client left; the run goes on without it
print(f"\n-- dropped after event {last_id}; resuming --")

# The reconnecting client sends Last-Event-ID: nothing repeated, nothing skipped.
with relay.subscribe(key, after=last_id) as sub:
    rest = "".join(event.text for event in sub)
print(rest)

# A second tab watches the same answer, from the start, while or after it runs.
with relay.subscribe(key) as watcher:
    whole = "".join(watcher.tokens())
assert whole.endswith(rest) and whole == "Streams that outlive their connection."
assert relay.status(key) == "completed" and watcher.output.content == whole

# Cancel from anywhere: the run stops at its next callback.
slow = ScriptedChatModel(responses=["a long answer " * 50], chunk_size=1, delay=0.01)
key = relay.publish(callstream.iter_callbacks(slow, "Go on."))
partial = ""
with relay.subscribe(key) as sub:
    for token in sub.tokens():
        partial += token
        if len(partial) == 5:
            relay.cancel(key)  # say, the Stop button of another tab
assert relay.status(key) == "cancelled" and len(partial) < len("a long answer " * 50)
print(f"cancelled after {len(partial)} characters")

# Unknown keys and lost positions are errors, never a silent restart.
try:
    relay.subscribe("no-such-key")
except callstream.StreamNotFound as exc:
    print("StreamNotFound:", exc)
