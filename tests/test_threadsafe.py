"""call_soon_threadsafe: delivery, order, wakeup."""

import asyncio
import threading
import time

import pytest

from _aloop_support import TIMEOUT, run, run_once

N_THREADS = 8
N_CALLS = 10_000


def test_threadsafe_from_many_threads_all_delivered_in_order(loop):
    # Debug mode records a traceback per handle: keep this test about
    # delivery, not about debug-mode speed.
    loop.set_debug(False)
    received = {i: [] for i in range(N_THREADS)}
    total = N_THREADS * N_CALLS
    count = [0]
    done = loop.create_future()
    start = threading.Barrier(N_THREADS)

    def record(tid, i):
        received[tid].append(i)
        count[0] += 1
        if count[0] == total:
            done.set_result(None)

    def worker(tid):
        start.wait()
        for i in range(N_CALLS):
            loop.call_soon_threadsafe(record, tid, i)

    threads = [threading.Thread(target=worker, args=(t,))
               for t in range(N_THREADS)]

    def start_threads():
        for t in threads:
            t.start()

    loop.call_soon(start_threads)
    try:
        run(loop, done, timeout=90)
    finally:
        for t in threads:
            t.join()
    for tid in range(N_THREADS):
        assert received[tid] == list(range(N_CALLS)), tid
    assert count[0] == total


def test_threadsafe_returns_handle(loop):
    h = loop.call_soon_threadsafe(lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    run_once(loop)


def test_threadsafe_handle_cancel_from_thread(loop):
    calls = []
    handles = []

    def thread():
        h = loop.call_soon_threadsafe(calls.append, "cancelled")
        h.cancel()
        handles.append(h)
        loop.call_soon_threadsafe(calls.append, "kept")

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    run_once(loop)
    assert calls == ["kept"]
    assert handles[0].cancelled()


def test_threadsafe_wakes_loop_blocked_in_long_select(loop):
    # The loop has nothing to do but a far-away timer: it sleeps in the
    # poller.  A call from another thread must wake it up.
    woke = loop.create_future()
    far = loop.call_later(3600, lambda: None)

    def thread():
        time.sleep(0.1)  # let the loop block in its poll
        loop.call_soon_threadsafe(woke.set_result, "woken")

    t = threading.Thread(target=thread)
    t.start()
    try:
        # If the wakeup is lost the loop sleeps for an hour: the timeout
        # turns that into a failure instead of a hang.
        assert run(loop, woke, timeout=TIMEOUT) == "woken"
    finally:
        t.join()
        far.cancel()


def test_threadsafe_wakes_loop_with_no_timers(loop):
    # Nothing scheduled at all: the loop polls without a timeout.
    woke = []

    def thread():
        time.sleep(0.05)
        loop.call_soon_threadsafe(woke.append, 1)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=thread)
    t.start()
    # If the wakeup is lost, the watchdog stops the loop (and the test
    # fails) instead of hanging.
    watchdog = threading.Timer(TIMEOUT, loop.call_soon_threadsafe,
                               (loop.stop,))
    watchdog.start()
    try:
        loop.run_forever()
    finally:
        watchdog.cancel()
        watchdog.join()
        t.join()
    assert woke == [1]


def test_threadsafe_repeated_wakeups(loop):
    # Many separate wakeups of an idle loop, each waited for.
    n = 200
    got = []
    done = loop.create_future()

    def thread():
        for i in range(n):
            ev = threading.Event()

            def deliver(i=i, ev=ev):
                got.append(i)
                ev.set()
                if i == n - 1:
                    done.set_result(None)

            loop.call_soon_threadsafe(deliver)
            if not ev.wait(TIMEOUT):
                return

    t = threading.Thread(target=thread)
    t.start()
    try:
        run(loop, done)
    finally:
        t.join()
    assert got == list(range(n))


def test_threadsafe_from_loop_thread(loop):
    calls = []
    loop.call_soon(lambda: loop.call_soon_threadsafe(calls.append, 1))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert calls == [1]


def test_threadsafe_before_run(loop):
    calls = []
    t = threading.Thread(
        target=lambda: [loop.call_soon_threadsafe(calls.append, i)
                        for i in range(100)])
    t.start()
    t.join()
    run_once(loop)
    assert calls == list(range(100))


def test_threadsafe_interleaved_with_call_soon_keeps_fifo(loop):
    # From the loop thread, call_soon and call_soon_threadsafe share one
    # FIFO queue.
    calls = []
    for i in range(50):
        if i % 2:
            loop.call_soon_threadsafe(calls.append, i)
        else:
            loop.call_soon(calls.append, i)
    run_once(loop)
    assert calls == list(range(50))


def test_run_coroutine_threadsafe(loop):
    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    results = []
    errors = []

    def thread():
        try:
            for i in range(20):
                fut = asyncio.run_coroutine_threadsafe(add(i, 1), loop)
                results.append(fut.result(TIMEOUT))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=thread)
    loop.call_soon(t.start)
    loop.call_later(TIMEOUT, loop.stop)
    loop.run_forever()
    t.join()
    assert errors == []
    assert results == [i + 1 for i in range(20)]


def test_threadsafe_after_close_raises_in_thread(loop):
    loop.close()
    errors = []

    def thread():
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert errors == ["Event loop is closed"]


@pytest.mark.parametrize("n_threads", [2, 4])
def test_threadsafe_while_loop_busy_with_timers(loop, n_threads):
    # Threads post while the loop is also running timers; nothing is lost.
    loop.set_debug(False)
    per_thread = 2000
    got = []
    done = loop.create_future()
    total = n_threads * per_thread

    def record(x):
        got.append(x)
        if len(got) == total:
            done.set_result(None)

    def tick():
        if not done.done():
            loop.call_later(0.001, tick)

    def worker(tid):
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, (tid, i))

    threads = [threading.Thread(target=worker, args=(t,))
               for t in range(n_threads)]
    loop.call_soon(tick)
    for t in threads:
        loop.call_soon(t.start)
    try:
        run(loop, done, timeout=60)
    finally:
        for t in threads:
            t.join()
    for tid in range(n_threads):
        assert [i for (t, i) in got if t == tid] == list(range(per_thread))


def test_threadsafe_racing_with_close(loop_factory):
    # Threads keep posting while the loop is stopped and closed: each call
    # either succeeds or raises RuntimeError('Event loop is closed').
    # Never a crash.
    lp = loop_factory()
    lp.set_debug(False)
    stop_posting = threading.Event()
    errors = []
    unexpected = []

    def worker():
        while not stop_posting.is_set():
            try:
                lp.call_soon_threadsafe(lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))
                return
            except BaseException as exc:  # reported below
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        lp.call_later(0.05, lp.stop)
        lp.run_forever()
        lp.close()
        time.sleep(0.02)
    finally:
        stop_posting.set()
        for t in threads:
            t.join()
        lp.close()
    assert unexpected == []
    assert set(errors) <= {"Event loop is closed"}


def test_call_queued_while_an_overridden_time_runs_wakes_the_loop(loop_kind):
    """A thread queues a callback while the loop runs Python code of its
    own between deciding how long to sleep and sleeping (here a time()
    override, as virtual clocks have): the callback runs at once, not when
    the next timer (10 s away) is due."""
    from _aloop_support import loop_class

    class Clocked(loop_class(loop_kind)):
        inject = None

        def time(self):
            if self.inject is not None:
                inject, self.inject = self.inject, None
                t = threading.Thread(target=inject)
                t.start()
                t.join()
            return super().time()

    loop = Clocked()
    try:
        done = loop.create_future()
        loop.call_later(10, done.cancel)  # the sleep would last this long

        def arm():
            # the next time() call of the loop's own, before it sleeps
            loop.inject = lambda: loop.call_soon_threadsafe(
                done.set_result, "woken")

        loop.call_soon(arm)
        started = time.monotonic()
        assert loop.run_until_complete(done) == "woken"
        assert time.monotonic() - started < 5
    finally:
        loop.close()
