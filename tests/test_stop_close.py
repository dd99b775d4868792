"""stop(), run_forever(), run_until_complete(), close()."""

import asyncio
import sys

import pytest

from _aloop_support import run, run_once


def test_stop_runs_rest_of_iteration(loop):
    # Callbacks already queued when stop() is called (before or after it in
    # the queue) run in that iteration; what they schedule does not.
    calls = []

    def b():
        calls.append("b")
        loop.call_soon(calls.append, "c")

    loop.call_soon(calls.append, "a")
    loop.call_soon(loop.stop)
    loop.call_soon(b)
    loop.run_forever()
    assert calls == ["a", "b"]
    assert not loop.is_running()


def test_loop_can_run_again_after_stop(loop):
    calls = []

    def b():
        calls.append("b")
        loop.call_soon(calls.append, "c")

    loop.call_soon(b)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["b"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["b", "c"]
    assert run(loop, asyncio.sleep(0, "again")) == "again"


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []

    def a():
        calls.append("a")
        loop.call_soon(calls.append, "next")

    loop.stop()
    loop.call_soon(a)
    loop.run_forever()
    assert calls == ["a"]
    assert not loop.is_running()


def test_stop_twice_before_run_forever_one_iteration(loop):
    calls = []
    loop.stop()
    loop.stop()
    loop.call_soon(lambda: loop.call_soon(calls.append, "next"))
    loop.run_forever()
    assert calls == []
    # The stop request was consumed: the next run_forever runs until stopped.
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert calls == ["next"]


def test_stop_request_is_consumed(loop):
    # After a stopped run, a new run_forever keeps running until its own
    # stop(); it does not stop after one iteration.
    run_once(loop)
    calls = []

    def tick(n):
        calls.append(n)
        if n < 5:
            loop.call_soon(tick, n + 1)
        else:
            loop.stop()

    loop.call_soon(tick, 0)
    loop.call_later(10, loop.stop)  # safety net
    loop.run_forever()
    assert calls == [0, 1, 2, 3, 4, 5]


def test_stop_from_timer(loop):
    loop.call_later(0.02, loop.stop)
    loop.call_later(10, pytest.fail, "stop() from a timer did not stop")
    loop.run_forever()
    assert not loop.is_running()


def test_stop_with_idle_loop_wakes_it(loop):
    # The loop sleeps on a far timer; stop() from a callback that runs
    # later (through an I/O wakeup: call_soon_threadsafe) returns promptly.
    import threading

    far = loop.call_later(3600, lambda: None)
    t = threading.Timer(0.02, loop.call_soon_threadsafe, (loop.stop,))
    t.start()
    try:
        loop.run_forever()
    finally:
        t.join()
        far.cancel()
    assert not loop.is_running()


def test_is_running(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_once(loop)
    assert seen == [True]
    assert not loop.is_running()


def test_running_loop_reset_after_run(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
    run_once(loop)
    assert seen == [loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert asyncio._get_running_loop() is None


def test_asyncgen_hooks_set_while_running_and_restored(loop):
    def firstiter(agen):
        pass

    def finalizer(agen):
        pass

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    try:
        inside = []
        loop.call_soon(lambda: inside.append(sys.get_asyncgen_hooks()))
        run_once(loop)
        assert inside[0].firstiter is not None
        assert inside[0].firstiter is not firstiter
        assert inside[0].finalizer is not finalizer
        hooks = sys.get_asyncgen_hooks()
        assert hooks.firstiter is firstiter
        assert hooks.finalizer is finalizer
    finally:
        sys.set_asyncgen_hooks(*old)


def test_run_until_complete_result(loop):
    async def coro():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(coro()) == 42
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "fut")
    assert loop.run_until_complete(fut) == "fut"
    assert not loop.is_running()


def test_run_until_complete_exception(loop):
    class Boom(Exception):
        pass

    async def coro():
        await asyncio.sleep(0)
        raise Boom("x")

    with pytest.raises(Boom):
        loop.run_until_complete(coro())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result(5)
    assert loop.run_until_complete(fut) == 5


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError,
                       match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_close(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # idempotent
    assert loop.is_closed()


def test_close_drops_pending_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_later(0, calls.append, 2)
    loop.call_later(100, calls.append, 3)
    loop.close()
    assert calls == []
    assert loop.is_closed()


def test_close_with_registered_reader(loop):
    import socket

    a, b = socket.socketpair()
    try:
        loop.add_reader(a, lambda: None)
        loop.add_writer(b, lambda: None)
        loop.close()
        # The loop does not own the sockets: they are still usable.
        a.send(b"x")
        assert b.recv(1) == b"x"
    finally:
        a.close()
        b.close()


def test_close_while_running_raises(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(cb)
    run_once(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_run_forever_after_stop_in_run_until_complete_callback(loop):
    # run_until_complete used from a loop that was previously stopped
    # mid-way works normally.
    loop.call_soon(loop.stop)
    loop.run_forever()

    async def main():
        await asyncio.sleep(0.01)
        return "ok"

    assert run(loop, main()) == "ok"
