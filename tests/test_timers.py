"""call_later / call_at: timers fire by deadline, cancellation, memory."""

import asyncio
import random
import threading
import time
from unittest import mock

from _aloop_support import describe, run, run_child, run_once

# A timer may fire up to the loop's clock resolution early (the stdlib's
# rule); allow a little more so that the check is not about precision.
EARLY_TOLERANCE = 1e-3


def test_call_later_returns_timer_handle(loop):
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert isinstance(h, asyncio.TimerHandle)
    assert isinstance(h, asyncio.Handle)
    assert before + 10 <= h.when() <= after + 10
    h.cancel()


def test_call_at_keeps_when_as_given(loop):
    # TimerHandle keeps `when` itself: an int stays an int.
    when = int(loop.time()) + 100
    h = loop.call_at(when, lambda: None)
    assert h.when() == when and type(h.when()) is int
    assert type(h._when) is int
    assert f"when={when}" in repr(h)
    h.cancel()
    h = loop.call_later(100, lambda: None)
    assert type(h.when()) is float
    h.cancel()


def test_call_at_returns_timer_handle_with_when(loop):
    when = loop.time() + 10
    h = loop.call_at(when, lambda: None)
    assert isinstance(h, asyncio.TimerHandle)
    assert h.when() == when
    h.cancel()


def test_loop_time_is_monotonic_clock(loop):
    t0 = time.monotonic()
    lt = loop.time()
    t1 = time.monotonic()
    assert t0 <= lt <= t1
    values = [loop.time() for _ in range(1000)]
    assert values == sorted(values)


def test_timers_fire_in_deadline_order(loop):
    calls = []
    delays = [0.05, 0.01, 0.04, 0.0, 0.03, 0.02, -1.0, 0.015]
    for d in delays:
        loop.call_later(d, calls.append, d)
    done = loop.create_future()
    loop.call_later(0.06, done.set_result, None)
    run(loop, done)
    assert calls == sorted(delays)


def test_call_at_fire_in_deadline_order_same_iteration(loop):
    # All due already: they are queued in one iteration, sorted by when.
    base = loop.time() - 1
    offsets = list(range(2000))
    random.Random(42).shuffle(offsets)
    calls = []
    for off in offsets:
        loop.call_at(base + off * 1e-4, calls.append, off)
    run_once(loop)
    assert calls == sorted(offsets)


def test_timer_not_fired_before_deadline(loop):
    fired = []

    def cb(h_when):
        fired.append(loop.time() - h_when)

    for d in (0.001, 0.01, 0.02, 0.03):
        when = loop.time() + d
        loop.call_at(when, cb, when)
    done = loop.create_future()
    loop.call_later(0.05, done.set_result, None)
    run(loop, done)
    assert len(fired) == 4
    assert all(late >= -EARLY_TOLERANCE for late in fired), fired


def test_sleep_waits_at_least_delay(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.05)
        return loop.time() - t0

    assert run(loop, main()) >= 0.05 - EARLY_TOLERANCE


def test_equal_deadlines_fire_in_same_iteration(loop):
    # The stdlib leaves the order of equal deadlines undefined; what it
    # does guarantee is that they are all queued in the same iteration.
    calls = []
    when = loop.time() + 0.01
    n = 50

    def cb(i):
        calls.append(i)
        if len(calls) == 1:
            loop.call_soon(calls.append, "next-iteration")

    for i in range(n):
        loop.call_at(when, cb, i)
    loop.call_at(when + 0.02, calls.append, "later")
    done = loop.create_future()
    loop.call_at(when + 0.03, done.set_result, None)
    run(loop, done)
    # All equal-deadline timers ran before what the first of them scheduled
    # with call_soon: they were queued together.  ("later" may share their
    # iteration on a loaded machine, so its position is not checked.)
    assert sorted(calls[:n]) == list(range(n))
    assert sorted(calls[n:]) == ["later", "next-iteration"]


def test_zero_delay_timer_runs_after_queued_callbacks(loop):
    # call_soon entries queued before the iteration run first, then the
    # due timers queued by that iteration.
    calls = []
    loop.call_later(0, calls.append, "timer0")
    loop.call_at(loop.time() - 5, calls.append, "timer-past")
    loop.call_soon(calls.append, "soon")
    run_once(loop)
    assert calls == ["soon", "timer-past", "timer0"]


def test_timer_callback_args(loop):
    got = []
    loop.call_later(0, lambda *a: got.append(a), 1, 2, 3)
    loop.call_at(loop.time(), lambda *a: got.append(a))
    run_once(loop)
    assert sorted(got) == [(), (1, 2, 3)]


def test_cancelled_timer_does_not_fire(loop):
    calls = []
    h = loop.call_later(0.01, calls.append, "cancelled")
    loop.call_later(0.02, calls.append, "kept")
    h.cancel()
    assert h.cancelled()
    done = loop.create_future()
    loop.call_later(0.03, done.set_result, None)
    run(loop, done)
    assert calls == ["kept"]


def test_timer_cancelled_by_earlier_timer_same_iteration(loop):
    calls = []
    base = loop.time() - 1
    handles = {}

    def first():
        calls.append("first")
        handles["second"].cancel()

    loop.call_at(base, first)
    handles["second"] = loop.call_at(base + 0.001, calls.append, "second")
    loop.call_at(base + 0.002, calls.append, "third")
    run_once(loop)
    assert calls == ["first", "third"]


def test_timer_rescheduling_itself(loop):
    calls = []
    done = loop.create_future()

    def tick(n):
        calls.append(n)
        if n == 20:
            done.set_result(None)
        else:
            loop.call_later(0.001, tick, n + 1)

    loop.call_later(0, tick, 0)
    run(loop, done)
    assert calls == list(range(21))


def test_mostly_cancelled_timers_the_rest_fire_in_order(loop):
    # Enough cancelled timers that the heap gets compacted (stdlib rule:
    # more than 100 scheduled and more than half cancelled).
    base = loop.time() + 0.01
    fired = []
    expected = []
    handles = []
    rng = random.Random(7)
    offsets = list(range(3000))
    rng.shuffle(offsets)
    for off in offsets:
        handles.append((off, loop.call_at(base + off * 1e-5, fired.append,
                                          off)))
    for off, h in handles:
        if off % 10:
            h.cancel()
        else:
            expected.append(off)
    del handles
    expected.sort()
    done = loop.create_future()
    loop.call_at(base + 0.05, done.set_result, None)
    run(loop, done)
    assert fired == expected


def test_far_future_timer_does_not_block_loop(loop):
    calls = []
    h = loop.call_later(10 * 86400, calls.append, "far")
    loop.call_later(0.01, calls.append, "near")
    done = loop.create_future()
    loop.call_later(0.02, done.set_result, None)
    run(loop, done)
    assert calls == ["near"]
    h.cancel()


def test_loop_sleeps_until_timer_with_nothing_else(loop):
    # The only pending thing is a timer: the loop must wake up for it.
    fut = loop.create_future()
    loop.call_later(0.05, fut.set_result, "ok")
    assert run(loop, fut) == "ok"


# ------------------------------------------------- an overridden time()
# The stdlib's scheduler reads the clock through self.time(): a mocked or
# overridden time() (virtual clocks in test suites) moves the timers.


def test_patched_time_makes_timers_due(loop):
    async def main():
        now = loop.time()
        fired = []
        loop.call_at(now + 60, fired.append, "at")
        with mock.patch.object(loop, "time", return_value=now + 60):
            later = loop.call_later(5, fired.append, "later")
            assert later.when() == now + 65
            for _ in range(3):
                await asyncio.sleep(0)
        later.cancel()
        # Unpatched: the real clock again.
        start = time.monotonic()
        await asyncio.sleep(0.01)
        assert time.monotonic() - start < 5
        return fired

    # (not run(): its timeout would see the patched clock too)
    assert loop.run_until_complete(main()) == ["at"]


def test_patched_class_time_makes_timers_due(loop):
    async def main():
        now = loop.time()
        fired = []
        loop.call_at(now + 60, fired.append, "at")
        await asyncio.sleep(0)
        with mock.patch.object(type(loop), "time", lambda self: now + 60):
            for _ in range(3):
                await asyncio.sleep(0)
        return fired

    assert loop.run_until_complete(main()) == ["at"]


def test_subclass_time_is_the_schedulers_clock(loop):
    class Shifted(type(loop)):
        shift = 0.0

        def time(self):
            return super().time() + self.shift

    shifted = Shifted()
    try:
        async def main():
            fired = []
            shifted.call_later(3600, fired.append, "timer")
            sleeper = asyncio.ensure_future(asyncio.sleep(7200))
            await asyncio.sleep(0)
            shifted.shift = 3601.0
            await asyncio.sleep(0.01)
            assert fired == ["timer"] and not sleeper.done()
            shifted.shift = 7201.0
            await asyncio.sleep(0.01)
            assert sleeper.done()

        # (not run(): its timeout would see the shifted clock too)
        shifted.run_until_complete(main())
    finally:
        shifted.close()


def test_timer_scheduled_from_other_thread_via_threadsafe(loop):
    fut = loop.create_future()

    def schedule():
        loop.call_later(0.01, fut.set_result, "done")

    def thread():
        time.sleep(0.02)
        loop.call_soon_threadsafe(schedule)

    t = threading.Thread(target=thread)
    t.start()
    try:
        assert run(loop, fut) == "done"
    finally:
        t.join()


MEMORY_CHILD = """
import gc, tracemalloc
loop = new_loop()
loop.set_debug(False)

def cb():
    pass

def one_iteration():
    loop.call_soon(loop.stop)
    loop.run_forever()

# warm up: allocate whatever the loop allocates lazily
for i in range(1000):
    loop.call_later(3600, cb).cancel()
one_iteration()
gc.collect()

tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
keep = []
for i in range(100_000):
    h = loop.call_later(3600 + i * 1e-3, cb)
    if i % 100 == 0:
        keep.append(h)
    else:
        h.cancel()
del h
loaded = tracemalloc.get_traced_memory()[0]
one_iteration()
one_iteration()
gc.collect()
after = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
assert all(not h.cancelled() for h in keep)
for h in keep:
    h.cancel()
loop.close()
print(base, loaded, after)
"""


def test_cancelled_timers_memory_is_released(loop_kind):
    proc = run_child(loop_kind, MEMORY_CHILD,
                     env={"PYTHONASYNCIODEBUG": ""})
    assert proc.returncode == 0, describe(proc)
    base, loaded, after = map(int, proc.stdout.split())
    grown = loaded - base
    assert grown > 1_000_000, describe(proc)  # 100k handles were allocated
    # 99% of them were cancelled: after an iteration most memory is back.
    assert after - base < grown * 0.2, (base, loaded, after)
