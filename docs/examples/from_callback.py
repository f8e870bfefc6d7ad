"""Bridge any callback API (not only LangChain) to an iterator."""

import threading
import time

import callstream


def legacy_generate(prompt: str, on_token) -> str:  # a callback API you do not control
    for word in ["callbacks", " become", " a", " generator"]:
        time.sleep(0.01)
        on_token(word)
    return "finished"


def producer(emit) -> str:
    return legacy_generate("hi", on_token=emit)


with callstream.from_callback(producer, idle_timeout=5) as stream:
    for token in stream:
        print(token, end="", flush=True)
print()
assert stream.output == "finished" and stream.text == "callbacks become a generator"

# Leaving early stops the producer at its next callback:
stopped = threading.Event()


def endless(emit) -> None:
    try:
        while True:
            emit("tick")
            time.sleep(0.001)
    finally:
        stopped.set()


for i, _ in enumerate(callstream.from_callback(endless)):
    if i == 3:
        break
assert stopped.wait(1)
