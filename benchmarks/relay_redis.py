"""Relay figures across processes: `python -m benchmarks.relay_redis [--runs N] [--quick]`.

Starts its own `redis-server` on a free loopback port (Debian's package), then, in one
process on one event loop (the async face, as a FastAPI service would):

1. N concurrent runs (default 1,000) of 50 tokens each, paced like a model (a token every
   20 ms), each read by one subscriber from the moment it starts, through `RedisRelay` and
   through `MemoryRelay` in the same run: events/s, subscriber lag p50/p99 (a token's
   arrival at its subscriber minus the moment its producer emitted it; target p99 <= 20 ms
   on Redis), Redis memory at the peak and after the runs' TTL, round trips per run (Redis'
   own `INFO commandstats`: how well the producer's batching works) and CPU per event.
2. 1,000 random resumes of finished runs (a random `after`, read to the end): 0 lost and
   0 duplicated events, checked against a full read.

Writes `benchmarks/results/relay_redis.md` and `.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import callstream

RESULTS = Path(__file__).parent / "results"
TOKENS = 50
GAP = 0.02


def producer(tokens: int, gap: float) -> Any:
    async def produce(emit: Any) -> None:
        for _ in range(tokens):
            await asyncio.sleep(gap)
            emit(f"{time.perf_counter():.6f}")  # the token's text is its emit time

    return produce


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def concurrent_runs(relay: Any, runs: int, tokens: int, gap: float) -> dict[str, Any]:
    lags: list[float] = []
    counts: list[int] = []
    errors: list[str] = []

    async def one() -> None:
        n = 0
        try:
            key = await relay.areserve() if hasattr(relay, "areserve") else relay.reserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(tokens, gap), sink="deque"), key=key)
                async for token in sub.tokens():
                    lags.append(time.perf_counter() - float(token))
                    n += 1
        except Exception as exc:  # counted and reported, not a crash of the whole benchmark
            errors.append(type(exc).__name__)
        counts.append(n)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    events = sum(counts)
    return {
        "runs": runs,
        "events": events,
        "lost": runs * tokens - events,
        "events_per_s": round(events / wall),
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 2),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2),
        "cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1),
        # 100: this process's one thread was busy all along (lag then measures the CPU backlog)
        "cpu_busy_pct": round(cpu / wall * 100),
        "wall_s": round(wall, 2),
        "runs_failed": len(errors),
        "failures": sorted(set(errors)),
    }


async def resumes(relay: Any, count: int, tokens: int) -> dict[str, Any]:
    """Finished runs resumed at random positions: the rest equals the full read's tail."""
    rng = random.Random(18)
    keys = []
    for _ in range(20):
        key = await relay.apublish(callstream.afrom_callback(producer(tokens, 0), sink="deque"))
        keys.append(key)
    full: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        async with relay.asubscribe(key) as sub:
            full[key] = [(e.id, e.text) async for e in sub]
    lost = duplicated = 0
    for _ in range(count):
        key = rng.choice(keys)
        events = full[key]
        cut = rng.randrange(len(events))
        async with relay.asubscribe(key, after=events[cut][0]) as sub:
            rest = [(e.id, e.text) async for e in sub]
        expected = events[cut + 1 :]
        lost += len([e for e in expected if e not in rest])
        duplicated += len(rest) - len(set(rest)) + len([e for e in rest if e not in expected])
    return {"resumes": count, "lost": lost, "duplicated": duplicated}


def commandstats(client: Any) -> int:
    """Commands Redis executed (its `INFO commandstats`: the calls inside Lua scripts included)."""
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k != "cmdstat_info")


class RoundTrips:
    """Round trips seen from the client side: each packed write to a connection is one
    (a pipeline or a Lua script is one, whatever it holds)."""

    def __init__(self) -> None:
        import redis.asyncio.connection as aconn
        import redis.connection as conn

        self.count = 0
        for cls in (conn.AbstractConnection, aconn.AbstractConnection):
            original = cls.send_packed_command

            def counted(self_: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
                self.count += 1
                return _original(self_, *args, **kw)

            cls.send_packed_command = counted  # type: ignore[method-assign,assignment]


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import redis
    from tests.redis_server import RedisServer

    from callstream.redis import RedisRelay

    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        out: dict[str, Any] = {"runs": args.runs, "tokens": TOKENS, "gap_ms": GAP * 1000}
        out["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        out["hiredis"] = bool(getattr(__import__("redis.utils").utils, "HIREDIS_AVAILABLE", False))
        memory = callstream.MemoryRelay(max_runs=args.runs * 2 + 100)
        out["memory"] = await concurrent_runs(memory, args.runs, TOKENS, GAP)
        relay = RedisRelay(server.url, ttl=args.ttl, max_runs=args.runs * 2 + 100, lease=args.lease)
        trips = RoundTrips()
        base_memory, calls0, server_cpu0 = redis_memory(client), commandstats(client), redis_cpu(client)
        peak = [base_memory]

        async def sample() -> None:
            while True:
                peak.append(redis_memory(client))
                await asyncio.sleep(0.1)

        sampler = asyncio.get_running_loop().create_task(sample())
        out["redis"] = await concurrent_runs(relay, args.runs, TOKENS, GAP)
        sampler.cancel()
        calls, round_trips = commandstats(client) - calls0, trips.count
        events = max(out["redis"]["events"], 1)
        out["redis"]["server_cpu_us_per_event"] = round((redis_cpu(client) - server_cpu0) / events * 1e6, 1)
        out["redis"]["round_trips_per_run"] = round(round_trips / args.runs, 1)
        out["redis"]["round_trips_per_event"] = round(round_trips / events, 2)
        out["redis"]["commands_per_event"] = round(calls / events, 2)
        out["redis"]["memory_peak_mb"] = round((max(peak) - base_memory) / 2**20, 1)
        await asyncio.sleep(args.ttl + 1.5)
        out["redis"]["memory_after_ttl_mb"] = round((redis_memory(client) - base_memory) / 2**20, 2)
        out["redis"]["keys_after_ttl"] = client.dbsize()
        out["resumes"] = await resumes(relay, args.resumes, TOKENS)
        relay.close()
        client.close()
        return out
    finally:
        server.close()


def report(out: dict[str, Any]) -> str:
    rows = [
        "| relay | events/s | lag p50 ms | lag p99 ms | CPU µs/event (this process) | process busy % | lost | runs failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("memory", "redis"):
        r = out[name]
        rows.append(
            f"| {name} | {r['events_per_s']} | {r['lag_p50_ms']} | {r['lag_p99_ms']} | "
            f"{r['cpu_us_per_event']} | {r['cpu_busy_pct']} | {r['lost']} | "
            f"{r['runs_failed']}{' (' + ', '.join(r['failures']) + ')' if r['failures'] else ''} |"
        )
    r = out["redis"]
    return "\n".join(
        [
            f"# Relay across processes: {out['runs']} concurrent runs of {out['tokens']} tokens "
            f"(a token every {out['gap_ms']:.0f} ms), one subscriber each, one process",
            "",
            *rows,
            "",
            f"- Redis lag p99 vs memory: {r['lag_p99_ms'] / max(out['memory']['lag_p99_ms'], 1e-9):.2f}x",
            f"- Redis round trips per run (producer and subscriber, pipelines and scripts counted once): "
            f"{r['round_trips_per_run']}, {r['round_trips_per_event']} per event; "
            f"{r['commands_per_event']} commands executed per event (inside scripts included); "
            f"redis-server CPU {r['server_cpu_us_per_event']} µs per event",
            f"- Redis memory: {r['memory_peak_mb']} MB at the peak, {r['memory_after_ttl_mb']} MB after the TTL "
            f"({r['keys_after_ttl']} keys left)",
            f"- {out['resumes']['resumes']} random resumes: {out['resumes']['lost']} lost, "
            f"{out['resumes']['duplicated']} duplicated",
            f"- Machine: {os.cpu_count()} cores, load average {out['load_average_before']} before the runs "
            f"(other work on the machine included); hiredis parser: {out['hiredis']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--resumes", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=3.0, help="the relay's lease (its default: 3 s)")
    parser.add_argument(
        "--ttl", type=float, default=15.0, help="the runs' TTL (longer than the backlog), to measure memory after it"
    )
    parser.add_argument("--quick", action="store_true", help="20 runs, 50 resumes (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.resumes, args.ttl = 20, 50, 1.0
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.redis_server
    out = asyncio.run(main_async(args))
    text = report(out)
    print(text)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "relay_redis.md").write_text(text + "\n")
        (args.out / "relay_redis.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
