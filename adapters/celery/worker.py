"""A Celery worker that runs the reference apps' runs and publishes them on Redis.

    CALLSTREAM_REDIS_URL=redis://127.0.0.1:6379/0 celery -A adapters.celery.worker worker -l info

(from the repository root). With `CALLSTREAM_REDIS_URL` and `CALLSTREAM_CELERY=1` set, the apps'
`POST /runs` reserves a key on the `RedisRelay`, enqueues `callstream.run` with it and answers at
once; the client subscribes right away (the run is `queued` until a worker starts it) and any app
process serves `GET /runs/{key}/stream` from Redis.

What the task guarantees:

- a run cancelled before a worker picks it up never calls the model (`relay.run` returns at once);
- a run that fails is recorded as failed, then retried (`max_retries`): the retry is a new attempt
  under the same key, and subscribers see an `attempt` event before its events;
- `acks_late` with `reject_on_worker_lost`: a worker that dies mid-run (SIGKILL, OOM) leaves the
  task to be delivered again. Its subscribers do not wait for that: the run's lease expires within
  `lease` seconds and they get `ProducerLost`; the redelivered task runs a new attempt.
- only JSON crosses Redis: the task's arguments (Celery's `json` serializer) and the run's events.
"""

from __future__ import annotations

import gc
import os
from dataclasses import asdict
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

import callstream
from adapters import shared
from adapters.validation import RunRequest

REDIS_URL = os.environ.get("CALLSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("callstream", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],  # never pickle
    task_ignore_result=True,  # the run's outcome is on the relay
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # one run per worker process at a time, the others stay queued
    broker_connection_retry_on_startup=True,
    # how long an unacknowledged task waits before Redis delivers it again (a worker died)
    broker_transport_options={"visibility_timeout": float(os.environ.get("CALLSTREAM_VISIBILITY_TIMEOUT", "3600"))},
)


@worker_process_init.connect
def freeze_startup(**_: Any) -> None:
    """Each worker process, once started: keep the cycle collector's full passes off the objects
    start-up made (docs/performance.md)."""
    gc.collect()
    gc.freeze()


@app.task(name="callstream.run", bind=True, max_retries=2)
def run(self: Task, key: str, request: dict[str, Any]) -> str:
    """Run `request` (a `POST /runs` body, checked by the app) and publish it under `key`."""
    runnable, inputs, config = shared.run_input(RunRequest(**request))
    try:
        summary = shared.relay().run(callstream.iter_callbacks(runnable, inputs, config), key=key)
    except Exception as exc:  # recorded on the relay; a retry is a new attempt under the same key
        raise self.retry(exc=exc, countdown=0.5) from None
    return summary.status


def enqueue(key: str, request: RunRequest) -> None:
    """What the apps call: hand the reserved `key` to a worker."""
    run.delay(key, asdict(request))
