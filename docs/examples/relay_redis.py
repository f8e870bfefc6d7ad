"""A worker process runs the model and publishes on Redis; this process subscribes, drops, resumes, cancels."""

import multiprocessing
import os

import callstream
from callstream.redis import RedisRelay
from callstream.testing import ScriptedChatModel

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")


def task(key: str, answer: str, delay: float) -> None:
    """A worker's task body (Celery, RQ, a process of your own): run the stream under the reserved key."""
    relay = RedisRelay(REDIS_URL)
    model = ScriptedChatModel(responses=[answer], chunk_size=4, delay=delay)
    relay.run(callstream.iter_callbacks(model, "Say something."), key=key)  # re-raises a failure


def worker(tasks: list[tuple[str, str, float]]) -> None:
    """A worker process taking its tasks in turn."""
    for args in tasks:
        task(*args)


if __name__ == "__main__":
    workers = multiprocessing.get_context("spawn")
    relay = RedisRelay(REDIS_URL, ttl=600)  # the same in every web process and worker

    # POST /runs: reserve a key, hand the run to a worker, answer with the key at once.
    key, later = relay.reserve(), relay.reserve()
    tasks = [(key, "Streams that outlive their process.", 0.0), (later, "a long answer " * 50, 0.01)]
    process = workers.Process(target=worker, args=(tasks,))
    process.start()

    # GET /runs/{key}/stream on one web process: a few events, then the connection drops.
    last_id = None
    with relay.subscribe(key) as sub:  # "queued" until the worker starts: it waits, no 404
        for event in sub:
            last_id = event.id
            if event.kind == "token" and event.text and int(event.id) >= 4:
                break
    print(f"-- dropped after event {last_id}; the reconnect lands on another process --")

    # Any other process resumes from Last-Event-ID: nothing repeated, nothing skipped.
    with relay.subscribe(key, after=last_id) as sub:
        rest = "".join(event.text for event in sub)
    with relay.subscribe(key) as watcher:
        whole = "".join(watcher.tokens(answer_only=True))  # rebuilt from JSON: chunks, tool calls, usage
    assert whole.endswith(rest) and whole == "Streams that outlive their process."
    assert relay.status(key) == "completed" and watcher.output.content == whole
    print(rest, "| usage:", watcher.summary.usage)

    # Cancel from any process: the worker's model stops at its next callback.
    key = later
    partial = ""
    with relay.subscribe(key) as sub:
        for token in sub.tokens():
            partial += token
            if len(partial) == 8:
                relay.cancel(key)  # say, the Stop button, served by another web process
    process.join(30)
    assert relay.status(key) == "cancelled" and len(partial) < len("a long answer " * 50)
    print(f"cancelled after {len(partial)} characters")
