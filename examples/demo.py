"""aloop's main job: a real asyncio program, run on stock asyncio and on
aloop in fresh processes, checked for identical results and timed.

The program is an ordinary asyncio application: a TCP line-echo server
(asyncio.start_server) on 127.0.0.1 with concurrent stream clients, a
producer/consumer pipeline over asyncio.Queue with TaskGroup, and a burst
of timers and short-lived tasks.  Every phase checks its own result (a
digest of all echoed bytes, item counts) so "faster" never means "wrong".

    python examples/demo.py            # both loops, 3 rounds, table
    python examples/demo.py --rounds 1
"""
import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import time

CLIENTS = 50
LINES_PER_CLIENT = 200
QUEUE_ITEMS = 100_000
TASKS = 50_000


async def echo_phase():
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        digest = hashlib.sha256()
        for j in range(LINES_PER_CLIENT):
            line = f"client {i} line {j} {'x' * (j % 64)}\n".encode()
            writer.write(line)
            await writer.drain()
            echoed = await reader.readline()
            assert echoed == line, (echoed, line)
            digest.update(echoed)
        writer.close()
        await writer.wait_closed()
        return digest.hexdigest()

    async with server:
        digests = await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


async def queue_phase():
    queue = asyncio.Queue(maxsize=1000)
    total = 0

    async def producer():
        for i in range(QUEUE_ITEMS):
            await queue.put(i)
        await queue.put(None)

    async def consumer():
        nonlocal total
        while (item := await queue.get()) is not None:
            total += item

    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer())
        tg.create_task(consumer())
    assert total == QUEUE_ITEMS * (QUEUE_ITEMS - 1) // 2
    return total


async def tasks_and_timers_phase():
    loop = asyncio.get_running_loop()
    fired = 0

    def tick():
        nonlocal fired
        fired += 1

    handles = [loop.call_later(0.001 * (i % 10), tick) for i in range(TASKS)]
    for h in handles[::2]:
        h.cancel()

    async def worker(i):
        await asyncio.sleep(0)
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        return i

    results = await asyncio.gather(*(worker(i) for i in range(TASKS)))
    await asyncio.sleep(0.02)
    assert sum(results) == TASKS * (TASKS - 1) // 2
    assert fired == TASKS // 2, fired
    return fired


async def program():
    timings, results = {}, {}
    for name, phase in (("tcp echo (streams)", echo_phase),
                        ("queue pipeline", queue_phase),
                        ("tasks + timers", tasks_and_timers_phase)):
        t0 = time.perf_counter()
        results[name] = await phase()
        timings[name] = time.perf_counter() - t0
    return timings, results


def child(loop_name):
    if loop_name == "aloop":
        import aloop
        timings, results = aloop.run(program())
        loop_type = "aloop.Loop"
    else:
        timings, results = asyncio.run(program())
        loop_type = "asyncio default loop"
    print(json.dumps({"loop": loop_type, "timings": timings,
                      "results": {k: str(v) for k, v in results.items()}}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)

    runs = {"asyncio": [], "aloop": []}
    for r in range(args.rounds):
        for name in runs:  # alternate loops round by round
            out = subprocess.run([sys.executable, __file__, "--child", name],
                                 capture_output=True, text=True, timeout=300)
            if out.returncode:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"{name} run failed")
            runs[name].append(json.loads(out.stdout))
    ref = runs["asyncio"][0]["results"]
    for name, rs in runs.items():
        for res in rs:
            if res["results"] != ref:
                raise SystemExit(f"{name} computed different results: "
                                 f"{res['results']} != {ref}")
    print(f"Same results on both loops ({args.rounds} rounds each): "
          + ", ".join(f"{k}={v}" for k, v in ref.items()))
    print()
    print(f"{'phase':<22}{'asyncio (s)':>13}{'aloop (s)':>12}{'speedup':>10}")
    phases = list(runs["asyncio"][0]["timings"])
    for phase in phases + ["total"]:
        med = {}
        for name, rs in runs.items():
            vals = [sum(r["timings"].values()) if phase == "total"
                    else r["timings"][phase] for r in rs]
            med[name] = statistics.median(vals)
        print(f"{phase:<22}{med['asyncio']:>13.3f}{med['aloop']:>12.3f}"
              f"{med['asyncio'] / med['aloop']:>9.2f}x")
    print("\n(medians over the rounds; lower seconds is better)")


if __name__ == "__main__":
    main()
