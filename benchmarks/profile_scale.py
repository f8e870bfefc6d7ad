"""Profile one async row of the scale section: `python -m benchmarks.profile_scale`.

Runs `--streams` concurrent streams of the paced model (as `benchmarks/scale.py`)
for one row, under cProfile (`--profiler cprofile`, the default: exact call
counts, inflated times) or under nothing (`--profiler none`, for a sampling
profiler attached from outside: `py-spy record -o out.svg -- python -m
benchmarks.profile_scale --profiler none`). Prints the CPU per stream, the
call counts per stream of the functions that matter for the per-stream and
per-token costs, and the top functions by own time.

```sh
.venv/bin/python -m benchmarks.profile_scale --row "aiter_callbacks(..., sink='deque').tokens()"
.venv/bin/python -m benchmarks.profile_scale --row floor --out /tmp/floor.prof
```
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

from benchmarks.scale import DELAY, TTFT, async_cases, in_tasks
from callstream.testing import ScriptedChatModel

#: short names for the rows of `async_cases`
ALIASES = {
    "native": "native model.astream()",
    "floor": "astream() + no-op tap handler (floor)",
    "ours": "aiter_callbacks(...).tokens()",
    "deque": "aiter_callbacks(..., sink='deque').tokens()",
    "events": "astream_events(v2)",
}

#: functions whose calls per stream say where the per-stream and per-token work goes
WATCH = (
    "create_task",
    "create_future",
    "call_soon",
    "call_later",
    "copy_context",
    "_next_batch",
    "_wake_threadsafe",
    "_wake",
    "set_wakeup",
    "_notify",
    "_after_put",
    "on_llm_new_token",
    "_start",
    "_end",
    "__init__",
    "_with_handler",
    "_make_core",
    "handler_type",
    "make_sink",
    "configure",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_scale")
    parser.add_argument("--row", default="deque", help=f"a row of the scale table, or one of {', '.join(ALIASES)}")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--profiler", choices=("cprofile", "none"), default="cprofile")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--out", help="write the cProfile stats here (for snakeviz, pstats)")
    args = parser.parse_args(argv)
    row = ALIASES.get(args.row, args.row)
    model = ScriptedChatModel(responses=["x" * args.tokens], ttft=TTFT, delay=DELAY)
    streaming = ScriptedChatModel(responses=["x" * args.tokens], ttft=TTFT, delay=DELAY, streaming=True)
    case = async_cases(model, streaming)[row]
    in_tasks(8, case)  # warm-up
    profiler = cProfile.Profile() if args.profiler == "cprofile" else None
    if profiler is not None:
        profiler.enable()
    t0 = time.process_time()
    run = in_tasks(args.streams, case)
    cpu = time.process_time() - t0
    if profiler is not None:
        profiler.disable()
    print(f"{row}: {args.streams} streams, {run.tokens} tokens, CPU {cpu / args.streams * 1e3:.2f} ms per stream")
    if profiler is None:
        return 0
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    print("\ncalls per stream (function, file:line): ncalls / streams, own ms per stream, cumulative ms per stream")
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in sorted(raw.items(), key=lambda kv: -kv[1][1]):
        if name in WATCH and ncalls >= args.streams // 2:
            where = f"{file.rsplit('/', 2)[-2:][-1]}:{line}" if "/" in file else file
            print(
                f"  {name:<22} {where:<40} {ncalls / args.streams:8.2f}"
                f" {tottime / args.streams * 1e3:8.3f} {cumtime / args.streams * 1e3:8.3f}"
            )
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
