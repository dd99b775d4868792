"""Loop-core workloads for the aloop benchmark suite.

Every workload is a plain function ``fn(loop, n, deadline, check) -> ops``:

* ``loop``     -- a fresh, not yet running event loop (asyncio, uvloop or aloop);
                  the same code runs on every loop;
* ``n``        -- the amount of work asked for (count bound);
* ``deadline`` -- a ``time.perf_counter()`` value; the workload stops early
                  (between batches) once it is passed (time bound);
* ``check``    -- when true, callbacks count what they do and the workload
                  asserts that every operation it reports really happened
                  (the harness runs a small checked warm-up before the timed
                  run; the timed run uses do-nothing callbacks);
* returns the number of operations actually done (what "ops" means is said
  in each docstring).

Most workloads drive the loop from a "driver" callback that issues a batch of
``BATCH`` operations and then reschedules itself, so that each batch is
followed by at least one loop iteration.
"""

import asyncio
import random
import socket
import threading
import time

BATCH = 1000


def _noop(*args):
    pass


class _Count:
    """A callback that counts its calls (used only in check mode)."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0

    def __call__(self, *args):
        self.n += 1


def _batches(n):
    return max(1, (n + BATCH - 1) // BATCH)


def _call_soon_driver(loop, n, deadline, check, schedule):
    """Run ``schedule(cb)`` BATCH times per driver call; ops = callbacks run.

    The driver is queued after its batch, so when it runs again the whole
    previous batch has run (ready-queue FIFO order).
    """
    cb = _Count() if check else _noop
    nbatches = _batches(n)
    done = 0

    def driver():
        nonlocal done
        if done >= nbatches or time.perf_counter() > deadline:
            loop.stop()
            return
        done += 1
        for _ in range(BATCH):
            schedule(cb)
        loop.call_soon(driver)

    loop.call_soon(driver)
    loop.run_forever()
    ops = done * BATCH
    if check:
        assert cb.n == ops, (cb.n, ops)
    return ops


def call_soon(loop, n, deadline, check):
    """loop.call_soon(cb) without arguments; ops = callbacks run."""
    call_soon = loop.call_soon
    return _call_soon_driver(loop, n, deadline, check, call_soon)


def call_soon_args(loop, n, deadline, check):
    """loop.call_soon(cb, 1, 2, 3) with three positional args; ops = callbacks run."""
    # Same driver as _call_soon_driver, with the arguments written out in
    # the call (a helper frame per op would hide the cost being measured).
    call_soon = loop.call_soon
    cb = _Count() if check else _noop
    nbatches = _batches(n)
    done = 0

    def driver():
        nonlocal done
        if done >= nbatches or time.perf_counter() > deadline:
            loop.stop()
            return
        done += 1
        for _ in range(BATCH):
            call_soon(cb, 1, 2, 3)
        call_soon(driver)

    call_soon(driver)
    loop.run_forever()
    ops = done * BATCH
    if check:
        assert cb.n == ops, (cb.n, ops)
    return ops


def call_soon_threadsafe(loop, n, deadline, check):
    """loop.call_soon_threadsafe(cb) from the loop's own thread; ops = callbacks run.

    Same batching as call_soon: measures the call itself (lock + wakeup write)
    and running the callbacks.
    """
    return _call_soon_driver(loop, n, deadline, check, loop.call_soon_threadsafe)


def call_soon_threadsafe_thread(loop, n, deadline, check):
    """One other thread calls loop.call_soon_threadsafe(cb) n times while the
    loop runs them; ops = callbacks run.

    Measures the cross-thread path: the lock, the wakeup of a loop blocked in
    the poller, and sharing the GIL with a producer thread.  The producer's
    final call_soon_threadsafe(loop.stop) is queued after every callback.
    """
    cb = _Count() if check else _noop
    sent = 0

    def producer():
        nonlocal sent
        cst = loop.call_soon_threadsafe
        try:
            for _ in range(_batches(n)):
                if time.perf_counter() > deadline:
                    break
                for _ in range(BATCH):
                    cst(cb)
                sent += BATCH
        finally:
            cst(loop.stop)

    thread = threading.Thread(target=producer)
    loop.call_soon(thread.start)
    loop.run_forever()
    thread.join()
    if check:
        assert cb.n == sent, (cb.n, sent)
    return sent


def timer_cancel(loop, n, deadline, check):
    """call_later(delay, cb) with pseudo-random delays of 1..100 s, then
    cancel() each, BATCH at a time, one loop iteration between batches;
    ops = schedule+cancel pairs.

    The iteration after each batch also pays for dropping the cancelled
    timers (heap compaction).
    """
    rng = random.Random(1234)
    delays = [rng.uniform(1.0, 100.0) for _ in range(BATCH)]
    cb = _Count() if check else _noop
    call_later = loop.call_later
    nbatches = _batches(n)
    done = 0

    def driver():
        nonlocal done
        if done >= nbatches or time.perf_counter() > deadline:
            loop.stop()
            return
        done += 1
        handles = [call_later(d, cb) for d in delays]
        for h in handles:
            h.cancel()
        loop.call_soon(driver)

    loop.call_soon(driver)
    loop.run_forever()
    if check:
        # Run a few more iterations: no cancelled timer may ever fire.
        loop.run_until_complete(asyncio.sleep(0.01))
        assert cb.n == 0, cb.n
    return done * BATCH


def timer_fire(loop, n, deadline, check):
    """BATCH timers per batch, deadlines already due (loop.time() minus a
    pseudo-random 0..1 ms, so the timer queue really orders them), fired
    by the loop; ops = timers fired.

    The driver is itself a timer whose deadline is later than all of its
    batch's, so it runs after them and schedules the next batch.
    """
    rng = random.Random(4321)
    offsets = [rng.uniform(1e-6, 1e-3) for _ in range(BATCH)]
    cb = _Count() if check else _noop
    call_at = loop.call_at
    time_ = loop.time
    nbatches = _batches(n)
    done = 0

    def driver():
        nonlocal done
        if check:
            assert cb.n == done * BATCH, (cb.n, done * BATCH)
        if done >= nbatches or time.perf_counter() > deadline:
            loop.stop()
            return
        done += 1
        base = time_()
        for off in offsets:
            call_at(base - off, cb)
        call_at(base, driver)

    loop.call_soon(driver)
    loop.run_forever()
    ops = done * BATCH
    if check:
        assert cb.n == ops, (cb.n, ops)
    return ops


TASK_SLEEPS = 4
TASK_WAVE = 100_000


async def _task_body():
    for _ in range(TASK_SLEEPS):
        await asyncio.sleep(0)
    return 1


def tasks_sleep0(loop, n, deadline, check):
    """n tasks (created with loop.create_task, up to 100k alive at once) each
    doing `await asyncio.sleep(0)` TASK_SLEEPS times, awaited with gather;
    ops = task steps (TASK_SLEEPS + 1 per task).
    """
    ntasks = max(1, -(-n // (TASK_SLEEPS + 1)))    # ceil: ops >= n
    create_task = loop.create_task

    async def main():
        total = 0
        while total < ntasks and time.perf_counter() <= deadline:
            wave = min(TASK_WAVE, ntasks - total)
            results = await asyncio.gather(
                *[create_task(_task_body()) for _ in range(wave)])
            if check:
                assert len(results) == wave and sum(results) == wave
            total += wave
        return total

    done = loop.run_until_complete(main())
    return done * (TASK_SLEEPS + 1)


def future_roundtrip(loop, n, deadline, check):
    """A coroutine repeating fut = loop.create_future();
    loop.call_soon(fut.set_result, None); await fut; ops = round trips.
    """
    create_future = loop.create_future
    call_soon = loop.call_soon
    nbatches = _batches(n)

    async def main():
        done = 0
        for _ in range(nbatches):
            if time.perf_counter() > deadline:
                break
            for _ in range(BATCH):
                fut = create_future()
                call_soon(fut.set_result, done)
                r = await fut
            if check:
                assert r == done, (r, done)
            done += BATCH
        return done

    return loop.run_until_complete(main())


def reader_churn(loop, n, deadline, check):
    """add_reader(fd, cb) then remove_reader(fd) on an idle socketpair end,
    BATCH pairs per driver call; ops = add+remove pairs.
    """
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    fd = a.fileno()
    cb = _Count() if check else _noop
    add_reader = loop.add_reader
    remove_reader = loop.remove_reader
    nbatches = _batches(n)
    done = 0

    def driver():
        nonlocal done
        if done >= nbatches or time.perf_counter() > deadline:
            loop.stop()
            return
        done += 1
        for _ in range(BATCH):
            add_reader(fd, cb)
            remove_reader(fd)
        loop.call_soon(driver)

    try:
        loop.call_soon(driver)
        loop.run_forever()
        if check:
            # The churn must leave the fd usable: register once more, make it
            # readable, and expect exactly one wakeup.
            assert cb.n == 0, cb.n
            fired = loop.create_future()

            def on_readable():
                remove_reader(fd)
                a.recv(16)
                fired.set_result(None)

            add_reader(fd, on_readable)
            b.send(b"x")
            loop.run_until_complete(asyncio.wait_for(fired, 5))
            assert cb.n == 0, cb.n
    finally:
        remove_reader(fd)
        a.close()
        b.close()
    return done * BATCH


# name -> (function, default count).  Default counts are calibrated so that
# each workload takes roughly 0.5-2 s on stock asyncio (CPython 3.11, one
# core of an ordinary x86-64 machine); --quick divides them by 20.
WORKLOADS = {
    "call_soon": (call_soon, 2_000_000),
    "call_soon_args": (call_soon_args, 2_000_000),
    "call_soon_threadsafe": (call_soon_threadsafe, 1_000_000),
    "call_soon_threadsafe_thread": (call_soon_threadsafe_thread, 300_000),
    "timer_cancel": (timer_cancel, 1_000_000),
    "timer_fire": (timer_fire, 800_000),
    "tasks_sleep0": (tasks_sleep0, 500_000),
    "future_roundtrip": (future_roundtrip, 300_000),
    "reader_churn": (reader_churn, 200_000),
}
