"""Reference leaks: repeating a workload must not grow memory.

Each workload runs in a child process: one warm-up round, then the traced
memory (tracemalloc) after ROUNDS more rounds must be back to where it was.
A leaked object per operation would show up as OPS * ROUNDS objects.
"""

import pytest

from _aloop_support import describe, run_child

LEAK_CHILD = r"""
import contextvars, gc, signal, socket, threading, tracemalloc

WORKLOAD = sys.argv[1]
OPS = 2000
ROUNDS = 4

loop = new_loop()
loop.set_debug(False)
loop.set_exception_handler(lambda loop, ctx: None)

def cb(*args):
    pass

def failing(*args):
    raise ValueError("leak test")

def one_iteration():
    loop.call_soon(loop.stop)
    loop.run_forever()

def w_call_soon():
    for i in range(OPS):
        loop.call_soon(cb, i, "x", None)
    one_iteration()

def w_call_soon_context():
    ctx = contextvars.copy_context()
    for i in range(OPS):
        loop.call_soon(cb, i, context=ctx)
        loop.call_soon(cb, i, context=contextvars.copy_context())
    one_iteration()

def w_timers():
    now = loop.time()
    for i in range(OPS):
        loop.call_at(now - 1, cb, i)
        loop.call_later(3600, cb, i).cancel()
    one_iteration()
    one_iteration()

def w_cancel_soon():
    hs = [loop.call_soon(cb, i) for i in range(OPS)]
    for h in hs:
        h.cancel()
    del hs
    one_iteration()

def w_threadsafe():
    def post():
        for i in range(OPS):
            loop.call_soon_threadsafe(cb, i)
        loop.call_soon_threadsafe(loop.stop)
    t = threading.Thread(target=post)
    t.start()
    loop.run_forever()
    t.join()
    one_iteration()

def w_exceptions():
    for i in range(OPS // 4):
        loop.call_soon(failing, i)
        loop.call_at(loop.time() - 1, failing, i)
    one_iteration()

def w_readers():
    a, b = socket.socketpair()
    a.setblocking(False)
    count = [0]
    def on_read():
        a.recv(100)
        count[0] += 1
    for i in range(OPS // 10):
        loop.add_reader(a, on_read)
        loop.add_writer(a, cb, i)
        b.send(b"x")
        one_iteration()
        loop.remove_writer(a)
        loop.remove_reader(a)
    a.close()
    b.close()

def w_tasks():
    async def coro(i):
        await asyncio.sleep(0)
        return i
    async def main():
        return sum(await asyncio.gather(*(coro(i) for i in range(OPS // 4))))
    loop.run_until_complete(main())

def w_repr():
    for i in range(OPS // 4):
        h = loop.call_soon(cb, i)
        t = loop.call_later(10, cb, i)
        repr(h); repr(t)
        t.when(); hash(t); t < t; t == t
        h.cancel(); t.cancel()
        repr(h); repr(t)
    one_iteration()

def w_signals():
    for i in range(OPS // 20):
        loop.add_signal_handler(signal.SIGUSR1, cb, i)
        loop.remove_signal_handler(signal.SIGUSR1)

def w_loops():
    global loop
    for i in range(20):
        other = new_loop()
        other.call_soon(cb)
        other.call_later(10, cb)
        other.run_until_complete(asyncio.sleep(0))
        other.close()

work = globals()["w_" + WORKLOAD]

# Warm up, untraced then traced, so that bounded caches (free lists,
# buffers that grow to the workload's size) are full before the baseline.
work()
tracemalloc.start(4)
for _ in range(3):
    work()
gc.collect()
base = tracemalloc.get_traced_memory()[0]
snap0 = tracemalloc.take_snapshot()
for _ in range(ROUNDS):
    work()
gc.collect()
after = tracemalloc.get_traced_memory()[0]
snap1 = tracemalloc.take_snapshot()
growth = after - base
print(growth)
if growth > 0:
    for stat in snap1.compare_to(snap0, "traceback")[:3]:
        print("\n".join(stat.traceback.format()), stat, file=sys.stderr)
loop.close()
"""

WORKLOADS = ["call_soon", "call_soon_context", "timers", "cancel_soon",
             "threadsafe", "exceptions", "readers", "tasks", "repr",
             "signals", "loops"]

# Allowed growth over all rounds: far below one object per operation
# (ROUNDS * OPS = 8000 operations), above allocator and cache noise.
LIMIT = 64 * 1024


@pytest.mark.parametrize("workload", WORKLOADS)
def test_no_leak(loop_kind, workload):
    proc = run_child(loop_kind, LEAK_CHILD, args=[workload],
                     env={"PYTHONASYNCIODEBUG": ""})
    assert proc.returncode == 0, describe(proc)
    growth = int(proc.stdout.split()[0])
    assert growth < LIMIT, f"memory grew by {growth} bytes\n" + describe(proc)
