"""call_soon and the order in which one loop iteration runs callbacks.

The stdlib's iteration (BaseEventLoop._run_once): poll for I/O, queue the
ready I/O callbacks, queue the due timers, then run exactly what was queued
at that point.  Callbacks added while the iteration runs wait for the next
one (after the next poll).
"""

import asyncio
import functools
import socket

import pytest

from _aloop_support import run_once


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    run_once(loop)


def test_call_soon_fifo(loop):
    calls = []
    for i in range(1000):
        loop.call_soon(calls.append, i)
    run_once(loop)
    assert calls == list(range(1000))


def test_call_soon_passes_args(loop):
    calls = []

    def cb(*args):
        calls.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1)
    loop.call_soon(cb, 1, "two", None)
    run_once(loop)
    assert calls == [(), (1,), (1, "two", None)]


def test_call_soon_accepts_any_callable(loop):
    calls = []

    class Callable:
        def __call__(self, x):
            calls.append(("obj", x))

        def method(self, x):
            calls.append(("method", x))

    obj = Callable()
    loop.call_soon(obj, 1)
    loop.call_soon(obj.method, 2)
    loop.call_soon(functools.partial(calls.append, ("partial", 3)))
    loop.call_soon(calls.append, ("builtin", 4))
    run_once(loop)
    assert calls == [("obj", 1), ("method", 2), ("partial", 3),
                     ("builtin", 4)]


def test_callback_runs_once(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    run_once(loop)
    run_once(loop)
    run_once(loop)
    assert calls == [1]


def test_running_loop_inside_callback(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop())
        seen.append(loop.is_running())

    loop.call_soon(cb)
    run_once(loop)
    assert seen == [loop, True]
    assert not loop.is_running()


def test_callbacks_added_during_iteration_wait_for_next(loop):
    # stop() ends run_forever after the current iteration; what a callback
    # schedules in that iteration is not run before the next run_forever.
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "added")
        loop.stop()

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.run_forever()
    assert calls == ["first", "second"]
    run_once(loop)
    assert calls == ["first", "second", "added"]


def test_callback_chain_one_per_iteration(loop):
    # Each callback re-schedules itself; with one stop() per iteration
    # the chain advances by one step per run_forever.
    calls = []

    def step(n):
        calls.append(n)
        loop.call_soon(step, n + 1)

    loop.call_soon(step, 0)
    for _ in range(5):
        run_once(loop)
    assert calls == [0, 1, 2, 3, 4]


def test_io_then_timers_then_new_callbacks(loop):
    # A callback queued before the iteration, a ready reader and a due
    # timer: the stdlib runs the already-queued callback first, then the
    # I/O callback, then the timer.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.send(b"x")
        calls = []

        def on_read():
            calls.append("read")
            a.recv(10)
            loop.remove_reader(a)

        loop.call_at(loop.time() - 1, calls.append, "timer")
        loop.add_reader(a, on_read)
        loop.call_soon(calls.append, "soon")
        run_once(loop)
        assert calls == ["soon", "read", "timer"]
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_new_callback_runs_before_io_polled_next_iteration(loop):
    # Iteration 1: cb schedules `added` and makes a socket readable.
    # Iteration 2: `added` was queued before the poll, so it runs before
    # the reader's callback, which is queued by that poll.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        calls = []

        def on_read():
            calls.append("read")
            a.recv(10)
            loop.remove_reader(a)
            loop.stop()

        def cb():
            calls.append("cb")
            loop.call_soon(calls.append, "added")
            b.send(b"x")

        loop.add_reader(a, on_read)
        loop.call_soon(cb)
        loop.call_later(10, loop.stop)  # safety net
        loop.run_forever()
        assert calls == ["cb", "added", "read"]
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_due_timer_and_io_same_iteration_then_next(loop):
    # Timer callback and I/O callback both scheduled call_soon work: that
    # work runs in the next iteration, after both.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.send(b"x")
        calls = []

        def on_read():
            calls.append("read")
            a.recv(10)
            loop.remove_reader(a)
            loop.call_soon(calls.append, "from-read")

        def on_timer():
            calls.append("timer")
            loop.call_soon(calls.append, "from-timer")

        loop.add_reader(a, on_read)
        loop.call_at(loop.time() - 1, on_timer)
        run_once(loop)
        assert calls == ["read", "timer"]
        run_once(loop)
        assert calls == ["read", "timer", "from-read", "from-timer"]
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_cancelled_handle_not_run(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    loop.call_soon(calls.append, 2)
    h.cancel()
    run_once(loop)
    assert calls == [2]


def test_cancel_later_handle_from_earlier_callback(loop):
    # Both queued for the same iteration: cancelling the second from the
    # first prevents it from running.
    calls = []
    handles = []

    def first():
        calls.append("first")
        handles[0].cancel()

    loop.call_soon(first)
    handles.append(loop.call_soon(calls.append, "second"))
    loop.call_soon(calls.append, "third")
    run_once(loop)
    assert calls == ["first", "third"]


def test_many_callbacks_fifo_across_growth(loop):
    # Interleave scheduling and running so that an internal ring buffer
    # wraps around and grows; order must stay FIFO.
    calls = []
    expected = []
    n = 0
    for rnd in range(20):
        for _ in range(rnd * 37 % 500 + 1):
            loop.call_soon(calls.append, n)
            expected.append(n)
            n += 1
        run_once(loop)
    assert calls == expected


def test_call_soon_with_many_args(loop):
    got = []
    args = tuple(range(100))
    loop.call_soon(lambda *a: got.append(a), *args)
    run_once(loop)
    assert got == [args]


def test_call_soon_keyword_other_than_context_rejected(loop):
    with pytest.raises(TypeError):
        loop.call_soon(lambda: None, foo=1)


def test_queue_grows_during_iteration_keeps_fifo(loop):
    # A callback schedules many more while the iteration is running: they
    # all run, in order, in the next iteration.
    calls = []

    def burst():
        calls.append("burst")
        for i in range(5000):
            loop.call_soon(calls.append, i)

    loop.call_soon(burst)
    loop.call_soon(calls.append, "same-iteration")
    run_once(loop)
    assert calls == ["burst", "same-iteration"]
    run_once(loop)
    assert calls[2:] == list(range(5000))


def test_callback_scheduling_callback_scheduling(loop):
    # call_soon(call_soon, ...) chains: each level runs one iteration later.
    calls = []
    loop.call_soon(loop.call_soon, loop.call_soon, calls.append, "deep")
    run_once(loop)
    run_once(loop)
    assert calls == []
    run_once(loop)
    assert calls == ["deep"]
