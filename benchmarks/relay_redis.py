"""Relay figures across processes: `python -m benchmarks.relay_redis [--runs N] [--gap S] [--quick]`.

Starts its own `redis-server` on a free loopback port (Debian's package), then:

1. **Across processes, as deployed**: a web process (one event loop: the async face, as a
   FastAPI service) reserves N runs (default 1,000), hands each key to a worker through a Redis
   list (a Celery broker's part) and subscribes to it; `--workers` worker processes (one loop
   each) take the keys and run them (`relay.arun(stream, key=key)`): 50 tokens each, paced like
   a model (a token every `--gap` s, chosen so the machine's cores stay below ~70% busy), with
   spread arrivals (each run's tokens at a random phase of `--gap`: real traffic), then again
   with lockstep arrivals (every run's token at once: the worst case, labelled as such).
   Events/s, subscriber lag p50/p99 (a token's arrival at its subscriber minus the moment its
   producer emitted it: `time.perf_counter`, CLOCK_MONOTONIC on Linux, one clock for every
   process), CPU per event of each process and of redis-server, Redis memory at the peak and
   after the runs' TTL, round trips per run (the broker's hand-off left out).
2. **Saturation**: the same across processes with no pacing (each producer yields to its loop
   between tokens): the most events/s this machine carries end to end.
3. **In one process** (the memory relay can only be compared there): producers and subscribers
   on one loop at the same pacing, `MemoryRelay` and `RedisRelay`, under both arrival patterns.
   Then 1. and 3. again with each process calling `gc.collect()` and `gc.freeze()` once started
   (a server's choice at the end of its start-up): no full collection walks the imports' objects.
4. 1,000 random resumes of finished runs (a random `after`, read to the end): 0 lost and
   0 duplicated events, checked against a full read.

Writes `benchmarks/results/relay_redis.md` and `.json` (not with `--quick` or `--only`).
`BENCH_PROFILE=dir` runs each process of 1. and 2. under cProfile (`dir/<process>-<arrival>.prof`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import callstream

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
TOKENS = 50
#: a token every 200 ms: 1,000 runs are 5,000 events/s, which keeps this 2-core machine below ~70% busy
GAP = 0.2
#: the broker's list of keys (the part Celery's broker plays) and the processes' start signals
JOBS, READY, GO = "bench:jobs", "bench:ready", "bench:go"


#: how the runs' tokens are spread in time (`--arrival`)
ARRIVALS = ("spread", "lockstep")


def producer(tokens: int, gap: float, arrival: str = "lockstep", rng: random.Random | None = None) -> Any:
    """A model's run: `tokens` tokens, a token every `gap` s, each token's text its emit time.

    `lockstep` (the worst case): every run sleeps `gap` between its tokens, so runs started
    together emit together, a burst of one token per run every `gap`. `spread` (real traffic,
    the same offered events/s): the run's first token comes at a random offset, uniform over
    `gap`, and its tokens keep to that schedule (`start + offset + i * gap`) whatever the loop's
    delays, as a remote model's tokens do; so the runs' tokens arrive evenly over each `gap`.
    """

    async def produce(emit: Any) -> None:
        if arrival == "spread" and gap > 0:
            start = time.perf_counter() + (rng or random).uniform(0, gap)
            for i in range(1, tokens + 1):
                await asyncio.sleep(max(0.0, start + i * gap - time.perf_counter()))
                emit(f"{time.perf_counter():.6f}")
            return
        for _ in range(tokens):
            await asyncio.sleep(gap)  # gap 0: yield to the loop (saturation)
            emit(f"{time.perf_counter():.6f}")  # the token's text is its emit time

    return produce


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def lag_figures(lags: list[float]) -> dict[str, float]:
    return {
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 2),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2),
        "lag_max_ms": round(max(lags, default=float("nan")) * 1000, 2),
    }


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
        # the relay's own hot paths write without send_packed_command (`_send`)
        import callstream._redis_store as store

        send: Any = getattr(store, "_send", None)

        async def sent(connection: Any, data: bytes) -> None:
            if connection.is_connected:  # else it calls send_packed_command, counted there
                self.count += 1
            await send(connection, data)

        if send is not None:
            store._send = sent


def hiredis() -> bool:
    import redis.utils

    return bool(getattr(redis.utils, "HIREDIS_AVAILABLE", False))


# -- one process: producers and subscribers on one loop ----------------------------------------


async def concurrent_runs(relay: Any, runs: int, tokens: int, gap: float, arrival: str) -> dict[str, Any]:
    rng = random.Random(18)
    lags: list[float] = []
    counts: list[int] = []
    errors: list[str] = []

    async def one() -> None:
        n = 0
        try:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                produce = producer(tokens, gap, arrival, rng)
                await relay.apublish(callstream.afrom_callback(produce, sink="deque"), key=key)
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
        **lag_figures(lags),
        "cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1),
        # 100: this process's one thread was busy all along (lag then measures the CPU backlog)
        "cpu_busy_pct": round(cpu / wall * 100),
        "wall_s": round(wall, 2),
        "runs_failed": len(errors),
        "failures": sorted(set(errors)),
    }


# -- across processes: a web process and worker processes --------------------------------------


class Stalls:
    """How late a 5 ms timer of this process's loop fires: the loop's own stalls (a busy loop, or a
    process waiting for a core), told apart from the waits of the relay's round trips."""

    def __init__(self) -> None:

        self.late: list[float] = []
        self.task = asyncio.get_running_loop().create_task(self.run())
        #: the pauses of the interpreter's full (generation 2) garbage collections, s
        self.gc_full: list[float] = []
        self.gc_started = 0.0
        gc.callbacks.append(self.collected)

    def collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.gc_started = time.perf_counter()
        elif info["generation"] == 2:
            self.gc_full.append(time.perf_counter() - self.gc_started)

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.late.append(time.perf_counter() - start - 0.005)

    def figures(self) -> dict[str, Any]:

        self.task.cancel()
        gc.callbacks.remove(self.collected)
        return {
            "loop_late_p99_ms": round(percentile(self.late, 0.99) * 1000, 1),
            "loop_late_max_ms": round(max(self.late, default=0.0) * 1000, 1),
            "gc_full_pauses_ms": [round(pause * 1000, 1) for pause in self.gc_full],
        }


def relay_of(args: argparse.Namespace) -> Any:
    from callstream.redis import RedisRelay

    return RedisRelay(args.url, ttl=args.ttl, max_runs=args.runs * 4 + 100, lease=args.lease)


def control_client(url: str) -> Any:
    """The benchmark's own client (the broker's hand-off, the start signal): a few connections."""
    import redis.asyncio

    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=4, timeout=None)
    return redis.asyncio.Redis.from_pool(pool)


async def web_role(args: argparse.Namespace) -> dict[str, Any]:
    """Reserve each run, hand its key to a worker, follow it to its end."""
    relay = relay_of(args)
    control = control_client(args.url)
    if os.environ.get("BENCH_GC_FREEZE"):  # as a server would after its start-up (see docs/performance.md)
        gc.collect()
        gc.freeze()
    await control.rpush(READY, "web")
    while not await control.blpop([GO + ":web"], timeout=1):
        pass
    trips = RoundTrips()
    stalls = Stalls()
    lags: list[float] = []
    counts: list[int] = []
    errors: list[str] = []
    seconds: list[int] = []  # when each lag was seen (s since the start)
    handed = 0

    async def one() -> None:
        nonlocal handed
        n = 0
        try:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await control.rpush(JOBS, key)  # the task is queued: a worker takes it
                handed += 1
                async for token in sub.tokens():
                    now = time.perf_counter()
                    lags.append(now - float(token))
                    seconds.append(int(now - t0))
                    n += 1
        except Exception as exc:
            errors.append(type(exc).__name__)
        counts.append(n)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.runs)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    late = stalls.figures()
    round_trips = trips.count - handed
    await control.rpush(JOBS, *(["stop"] * args.workers))
    await control.aclose()
    await relay.aclose()
    events = sum(counts)
    return {
        "events": events,
        "lost": args.runs * args.tokens - events,
        "events_per_s": round(events / wall),
        **lag_figures(lags),
        "lag_p99_ms_after_setup": round(
            percentile([lag for lag, at in zip(lags, seconds, strict=True) if at], 0.99) * 1000, 2
        ),
        # each second's lag p99, ms: the start (every run's set-up at once) against the steady state
        "lag_p99_ms_by_second": [
            round(percentile([lag for lag, at in zip(lags, seconds, strict=True) if at == second], 0.99) * 1000, 1)
            for second in range(max(seconds, default=-1) + 1)
        ],
        "cpu_s": cpu,
        "wall_s": wall,
        "round_trips": round_trips,
        **late,
        "runs_failed": len(errors),
        "failures": sorted(set(errors)),
    }


async def worker_role(args: argparse.Namespace) -> dict[str, Any]:
    """Take keys from the broker and run each (`arun`) as a task on this worker's loop."""
    relay = relay_of(args)
    control = control_client(args.url)
    if os.environ.get("BENCH_GC_FREEZE"):  # as a server would after its start-up (see docs/performance.md)
        gc.collect()
        gc.freeze()
    await control.rpush(READY, "worker")
    while not await control.blpop([GO + ":worker"], timeout=1):
        pass
    trips = RoundTrips()
    stalls = Stalls()
    taken = 0
    tasks: set[asyncio.Task[Any]] = set()
    errors: list[str] = []
    rng = random.Random(os.getpid())

    done: list[str] = []

    async def run(key: str) -> None:
        done.append(key)
        produce = producer(args.tokens, args.gap, args.arrival, rng)
        try:
            await relay.arun(callstream.afrom_callback(produce, sink="deque"), key=key)
        except Exception as exc:
            errors.append(type(exc).__name__)

    cpu0, t0 = time.process_time(), time.perf_counter()
    while True:
        got = await control.blpop([JOBS], timeout=1)  # within the client's socket timeout (5 s)
        taken += 1
        if got is None:
            continue
        key = got[1]
        if key == b"stop":
            break
        task = asyncio.get_running_loop().create_task(run(key.decode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    late = stalls.figures()
    round_trips = trips.count - taken
    await control.aclose()
    await relay.aclose()
    return {"runs": len(done), "cpu_s": cpu, "wall_s": wall, "round_trips": round_trips, "errors": errors, **late}


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, stolen) jiffies of every core since boot (/proc/stat): the whole machine's
    load, and the time a virtual machine's cores waited while its host ran something else."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields), fields[7]


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def commandstats(client: Any) -> int:
    """Commands Redis executed (its `INFO commandstats`: the calls inside Lua scripts included)."""
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def profiled(name: str) -> list[str]:
    """`BENCH_PROFILE=dir`: each process under cProfile, its statistics in `dir/<name>.prof`."""
    where = os.environ.get("BENCH_PROFILE")
    return ["--profile", str(Path(where) / f"{name}.prof")] if where else []


def run_role(args: argparse.Namespace) -> dict[str, Any]:
    """A web or worker process's part; under cProfile with `--profile`, timed in CPU time (the
    wall time would count the moments the process waits for a core, as `send` waking Redis)."""
    role = web_role if args.role == "web" else worker_role
    if not args.profile:
        return asyncio.run(role(args))
    import cProfile

    profile = cProfile.Profile(time.process_time)
    try:
        got: dict[str, Any] = profile.runcall(asyncio.run, role(args))
        return got
    finally:
        profile.dump_stats(args.profile)


def across_processes(
    args: argparse.Namespace, client: Any, gap: float, arrival: str, *, freeze: bool = False
) -> dict[str, Any]:
    """One web process and `args.workers` worker processes, started and released together;
    `freeze`: each calls `gc.collect()` and `gc.freeze()` once started, as a server may."""
    client.delete(READY, JOBS, GO + ":web", GO + ":worker")
    common = [
        *("--url", args.url, "--runs", str(args.runs), "--tokens", str(args.tokens), "--gap", str(gap)),
        *("--ttl", str(args.ttl), "--lease", str(args.lease), "--workers", str(args.workers)),
        *("--arrival", arrival),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("BENCH_GC_FREEZE", None)
    if freeze:
        env["BENCH_GC_FREEZE"] = "1"
    procs = {
        name: subprocess.Popen(
            [
                *(sys.executable, "-m", "benchmarks.relay_redis", "--role", name.split("-")[0], *common),
                *profiled(f"{name}-{arrival if gap else 'unpaced'}{'-frozen' if freeze else ''}"),
            ],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        for name in ["web", *(f"worker-{i}" for i in range(args.workers))]
    }
    deadline = time.monotonic() + 120
    for _ in procs:
        # within the client's socket timeout (5 s): the processes' start may take longer on a busy machine
        while not client.blpop([READY], timeout=1):
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs.values()):
                raise RuntimeError("the web and worker processes did not start")
    base_memory = redis_memory(client)
    calls0, server0, machine0, t0 = commandstats(client), redis_cpu(client), machine_cpu(), time.perf_counter()
    peak = [base_memory]
    client.rpush(GO + ":worker", *(["go"] * args.workers))
    client.rpush(GO + ":web", "go")
    done = threading.Event()

    def sample() -> None:
        sampler = client.__class__.from_url(args.url)
        while not done.wait(0.1):
            peak.append(redis_memory(sampler))
        sampler.close()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    outs = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"the {name} process failed ({proc.returncode})")
        outs[name] = json.loads(stdout.decode().strip().splitlines()[-1])
    machine1, server_cpu, window = machine_cpu(), redis_cpu(client) - server0, time.perf_counter() - t0
    done.set()
    thread.join()
    web = outs.pop("web")
    workers = list(outs.values())
    events = max(web["events"], 1)
    workers_cpu = sum(w["cpu_s"] for w in workers)
    cores = os.cpu_count() or 1
    ours = web["cpu_s"] + workers_cpu + server_cpu
    return {
        "runs": args.runs,
        "gap_ms": gap * 1000,
        "arrival": arrival if gap else "unpaced",
        "workers": args.workers,
        "events": web["events"],
        "lost": web["lost"],
        "events_per_s": web["events_per_s"],
        "lag_p50_ms": web["lag_p50_ms"],
        "lag_p99_ms": web["lag_p99_ms"],
        "lag_max_ms": web["lag_max_ms"],
        "lag_p99_ms_by_second": web["lag_p99_ms_by_second"],
        "wall_s": round(web["wall_s"], 2),
        "web_cpu_us_per_event": round(web["cpu_s"] / events * 1e6, 1),
        "workers_cpu_us_per_event": round(workers_cpu / events * 1e6, 1),
        "server_cpu_us_per_event": round(server_cpu / events * 1e6, 1),
        "total_cpu_us_per_event": round(ours / events * 1e6, 1),
        "web_busy_pct": round(web["cpu_s"] / web["wall_s"] * 100),
        # the web process, the workers and redis-server, as a share of every core of the machine, over
        # the same window as the machine's (from the start signal to the last process' exit)
        "ours_busy_pct_of_cores": round(ours / window / cores * 100),
        # the whole machine (other work on it included), from /proc/stat
        "machine_busy_pct": round((machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1) * 100),
        # the host's share: the time this machine's cores were stolen (counted in machine_busy_pct)
        "steal_pct": round((machine1[2] - machine0[2]) / max(machine1[1] - machine0[1], 1) * 100),
        "lag_p99_ms_after_setup": web["lag_p99_ms_after_setup"],
        "round_trips_per_run": round((web["round_trips"] + sum(w["round_trips"] for w in workers)) / args.runs, 1),
        "round_trips_per_run_web": round(web["round_trips"] / args.runs, 1),
        "round_trips_per_run_workers": round(sum(w["round_trips"] for w in workers) / args.runs, 1),
        "commands_per_event": round((commandstats(client) - calls0) / events, 2),
        "memory_base": base_memory,
        "memory_peak_mb": round((max(peak) - base_memory) / 2**20, 1),
        "runs_per_worker": [w["runs"] for w in workers],
        # how late a 5 ms timer fired on each process's loop (p99, max): the loops' own stalls
        "loop_late_ms": {
            name: [got["loop_late_p99_ms"], got["loop_late_max_ms"]]
            for name, got in (("web", web), *((f"worker-{i}", w) for i, w in enumerate(workers)))
        },
        # the full garbage collections of each process during the runs: how long each stopped its loop
        "gc_full_pauses_ms": {
            name: got["gc_full_pauses_ms"]
            for name, got in (("web", web), *((f"worker-{i}", w) for i, w in enumerate(workers)))
        },
        "runs_failed": web["runs_failed"],
        "failures": sorted(set(web["failures"]) | {e for w in workers for e in w["errors"]}),
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


#: the benchmark's parts (`--only`): across processes with spread arrivals, with lockstep arrivals,
#: unpaced; the same paced runs with `gc.freeze()` after each process's start-up (both arrivals);
#: in one process (both arrivals, memory and redis); the resumes
PARTS = ("across", "lockstep", "saturation", "frozen", "one", "resumes")


def main_parent(args: argparse.Namespace) -> dict[str, Any]:
    import redis
    from tests.redis_server import RedisServer

    from callstream.redis import RedisRelay

    parts = set(args.only.split(",")) if args.only else set(PARTS)
    server = RedisServer().start()
    args.url = server.url
    try:
        client = redis.Redis.from_url(server.url)
        out: dict[str, Any] = {"runs": args.runs, "tokens": args.tokens, "gap_ms": args.gap * 1000}
        out["workers"] = args.workers
        out["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        out["hiredis"] = hiredis()
        out["cores"] = os.cpu_count()
        print(f"load average {out['load_average_before']}, hiredis {out['hiredis']}", file=sys.stderr)
        out["across"] = {}
        if "across" in parts:
            a = out["across"]["spread"] = across_processes(args, client, args.gap, "spread")
            print("across processes, spread:", a, file=sys.stderr)
            time.sleep(args.ttl + 1.5)
            a["memory_after_ttl_mb"] = round((redis_memory(client) - a["memory_base"]) / 2**20, 2)
            a["keys_after_ttl"] = client.dbsize()
        if "lockstep" in parts:
            out["across"]["lockstep"] = across_processes(args, client, args.gap, "lockstep")
            print("across processes, lockstep:", out["across"]["lockstep"], file=sys.stderr)
        if "saturation" in parts:
            out["saturation"] = across_processes(args, client, 0, "lockstep")
            print("saturation:", out["saturation"], file=sys.stderr)
        out["frozen"] = {}
        for arrival in ARRIVALS if "frozen" in parts else ():
            out["frozen"][arrival] = across_processes(args, client, args.gap, arrival, freeze=True)
            print(f"across processes, {arrival}, gc.freeze():", out["frozen"][arrival], file=sys.stderr)

        async def in_process() -> dict[str, Any]:
            got: dict[str, Any] = {}
            relay = RedisRelay(server.url, ttl=args.ttl, max_runs=args.runs * 8 + 100, lease=args.lease)
            plain = [(arrival, arrival, False) for arrival in ARRIVALS] if "one" in parts else []
            frozen = [(f"{arrival}, gc.freeze()", arrival, True) for arrival in ARRIVALS] if "frozen" in parts else []
            for label, arrival, freeze in [*plain, *frozen]:
                if freeze:  # this process's objects so far are not walked again (undone after the run)
                    gc.collect()
                    gc.freeze()
                both = got[label] = {}
                memory = callstream.MemoryRelay(max_runs=args.runs * 2 + 100)
                both["memory"] = await concurrent_runs(memory, args.runs, args.tokens, args.gap, arrival)
                print(f"one process, {label}, memory:", both["memory"], file=sys.stderr)
                trips = RoundTrips()
                server0 = redis_cpu(client)
                both["redis"] = await concurrent_runs(relay, args.runs, args.tokens, args.gap, arrival)
                events = max(both["redis"]["events"], 1)
                both["redis"]["round_trips_per_run"] = round(trips.count / args.runs, 1)
                both["redis"]["server_cpu_us_per_event"] = round((redis_cpu(client) - server0) / events * 1e6, 1)
                print(f"one process, {label}, redis:", both["redis"], file=sys.stderr)
                if freeze:
                    gc.unfreeze()
            if "resumes" in parts:
                got["resumes"] = await resumes(relay, args.resumes, args.tokens)
            await relay.aclose()
            return got

        got = asyncio.run(in_process())
        out["one_process"] = {label: both for label, both in got.items() if label != "resumes"}
        out["resumes"] = got.get("resumes")
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        client.close()
        return out
    finally:
        server.close()


def _failed(r: dict[str, Any]) -> str:
    return f"{r['runs_failed']}{' (' + ', '.join(r['failures']) + ')' if r['failures'] else ''}"


def report(out: dict[str, Any]) -> str:
    cores = out["cores"]
    gap = out["gap_ms"]
    head = (
        "| setting | events/s | lag p50 ms | lag p99 ms | lag max ms | CPU µs/event: web + workers + redis-server "
        "| round trips per run | busy, % of cores (ours / machine / stolen by the host) | lag p99 ms after the "
        "set-up second | lost | runs failed |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    settings = [
        ("paced, spread arrivals (real traffic)", out["across"].get("spread")),
        ("paced, lockstep arrivals (worst case)", out["across"].get("lockstep")),
        ("unpaced (saturation)", out.get("saturation")),
        *((f"paced, {a} arrivals, gc.freeze() after start-up", r) for a, r in out.get("frozen", {}).items()),
    ]
    for name, r in settings:
        if r is None:
            continue
        rows.append(
            f"| {name} | {r['events_per_s']} | {r['lag_p50_ms']} | {r['lag_p99_ms']} | {r['lag_max_ms']} | "
            f"{r['total_cpu_us_per_event']} = {r['web_cpu_us_per_event']} + {r['workers_cpu_us_per_event']} + "
            f"{r['server_cpu_us_per_event']} | {r['round_trips_per_run']} ({r['round_trips_per_run_web']} web, "
            f"{r['round_trips_per_run_workers']} workers) | {r['ours_busy_pct_of_cores']} / {r['machine_busy_pct']} "
            f"/ {r.get('steal_pct', '-')} | {r.get('lag_p99_ms_after_setup', '-')} | {r['lost']} | {_failed(r)} |"
        )
    notes = []
    noted = [*out["across"].items(), *((f"{a}, gc.freeze()", r) for a, r in out.get("frozen", {}).items())]
    for arrival, r in noted:
        notes.append(
            f"- {arrival}: lag p99 (ms) of each second (the runs' set-up all at once, then the steady state): "
            f"{r['lag_p99_ms_by_second']}; {r['commands_per_event']} commands executed per event (inside scripts "
            f"included); Redis memory at the peak {r['memory_peak_mb']} MB; runs per worker {r['runs_per_worker']}; "
            f"how late a 5 ms timer fired on each loop, ms (p99, max): {r['loop_late_ms']}; the full garbage "
            f"collections during the runs, ms each: {r['gc_full_pauses_ms']}"
        )
    a = out["across"].get("spread")
    if a is not None:
        notes.append(
            f"- Redis memory: {a['memory_peak_mb']} MB at the peak, {a['memory_after_ttl_mb']} MB in all after the "
            f"TTL ({a['keys_after_ttl']} keys left; both over the {a['memory_base'] / 2**20:.1f} MB before the runs)"
        )
    one = [
        "| arrivals | relay | events/s | lag p50 ms | lag p99 ms | lag max ms | CPU µs/event (this process) "
        "| process busy % | round trips per run | lost | runs failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for arrival, both in out["one_process"].items():
        for name in ("memory", "redis"):
            r = both[name]
            one.append(
                f"| {arrival} | {name} | {r['events_per_s']} | {r['lag_p50_ms']} | {r['lag_p99_ms']} | "
                f"{r['lag_max_ms']} | {r['cpu_us_per_event']} | {r['cpu_busy_pct']} | "
                f"{r.get('round_trips_per_run', '-')} | {r['lost']} | {_failed(r)} |"
            )
        r = both["redis"]
        ratios.append(
            f"- {arrival}: Redis lag p99 vs memory {r['lag_p99_ms'] / max(both['memory']['lag_p99_ms'], 1e-9):.2f}x; "
            f"redis-server CPU {r['server_cpu_us_per_event']} µs per event"
        )
    resumed = out.get("resumes")
    return "\n".join(
        [
            f"# RedisRelay: {out['runs']} concurrent runs of {out['tokens']} tokens, one subscriber each",
            "",
            f"## Across processes: a web process (subscribers) and {out['workers']} worker processes (producers)",
            "",
            f"Paced: a token every {gap:.0f} ms per run (the offered load: {out['runs'] * 1000 / gap:.0f} events/s, "
            f"chosen to keep this benchmark's processes at or below ~70% of the {cores} cores). Spread arrivals: "
            f"each run's first token at a random offset, uniform over {gap:.0f} ms, then on that schedule, so the "
            f"runs' tokens arrive evenly, as independent models' do. Lockstep arrivals, the worst case: every run "
            f"sleeps {gap:.0f} ms between its tokens and they all start together, so each {gap:.0f} ms brings one "
            f"burst of {out['runs']} events at once (lag then measures the time to drain a burst). Unpaced: each "
            "producer yields to its loop between tokens, so its tokens go in larger batches (the most events/s the "
            "machine carries end to end; hand-off of the keys included). Lag: a token's arrival at its subscriber "
            "minus its emit time, written in the token's text (`time.perf_counter`, one clock for every process). "
            "gc.freeze() after start-up: each process calls `gc.collect()` then `gc.freeze()` once started (what "
            "a server can do at the end of its start-up, docs/performance.md): the objects of its imports are no longer "
            "walked by the cycle collector, whose full collections otherwise stop a process for 50-150 ms. "
            "Stolen by the host: the share of the cores' time this virtual machine's host gave to other work while "
            "the row ran (`steal` in /proc/stat, also counted in the machine's share): on a shared host it moves "
            "the lag's tail more than anything else (compare rows only at a like share).",
            "",
            *rows,
            "",
            *notes,
            "",
            f"## In one process (producers and subscribers on one loop), the same pacing ({gap:.0f} ms)",
            "",
            *one,
            "",
            *ratios,
            *(
                [f"- {resumed['resumes']} random resumes: {resumed['lost']} lost, {resumed['duplicated']} duplicated"]
                if resumed
                else []
            ),
            "",
            f"Machine: {cores} cores shared with other work; load average {out['load_average_before']} before, "
            f"{out['load_average_after']} after; hiredis parser: {out['hiredis']}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--gap", type=float, default=GAP, help="seconds between a run's tokens (the pacing)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (producers)")
    parser.add_argument("--resumes", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=3.0, help="the relay's lease (its default: 3 s)")
    parser.add_argument("--ttl", type=float, default=15.0, help="the runs' TTL, to measure memory after it")
    parser.add_argument("--quick", action="store_true", help="20 runs, 50 resumes (a smoke run)")
    parser.add_argument(
        "--only", help=f"comma-separated parts to run, of {','.join(PARTS)} (the results files are not written)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--role", choices=("web", "worker"), help=argparse.SUPPRESS)
    parser.add_argument("--arrival", choices=ARRIVALS, default="spread", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        print(json.dumps(run_role(args)))
        return
    if args.only and not set(args.only.split(",")) <= set(PARTS):
        parser.error(f"--only takes parts of {','.join(PARTS)}")
    if args.quick:
        args.runs, args.resumes, args.ttl = 20, 50, 1.0
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    sys.path.insert(0, str(ROOT))  # tests.redis_server
    out = main_parent(args)
    text = report(out)
    print(text)
    if not args.quick and not args.only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "relay_redis.md").write_text(text + "\n")
        (args.out / "relay_redis.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
