"""contextvars: callbacks run in the context captured when scheduled."""

import asyncio
import contextvars
import socket
import threading

from _aloop_support import run, run_once

var = contextvars.ContextVar("var", default="default")


def _in_fresh_context(func, *args):
    """Run func in an empty-ish context so tests don't leak var values."""
    return contextvars.Context().run(func, *args)


def test_call_soon_copies_context_at_schedule_time(loop):
    seen = []

    def body():
        var.set("scheduled")
        loop.call_soon(lambda: seen.append(var.get()))
        var.set("changed-after")

    _in_fresh_context(body)
    run_once(loop)
    assert seen == ["scheduled"]


def test_callback_changes_do_not_leak(loop):
    seen = []

    def setter():
        var.set("inside")
        seen.append(var.get())

    def body():
        var.set("outer")
        loop.call_soon(setter)
        loop.call_soon(lambda: seen.append(var.get()))
        run_once(loop)
        seen.append(var.get())

    _in_fresh_context(body)
    assert seen == ["inside", "outer", "outer"]


def test_call_soon_explicit_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("modified")

    loop.call_soon(cb, context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    run_once(loop)
    assert seen == ["in-ctx", "modified"]
    # Changes made by the callback are visible in the context object.
    assert ctx[var] == "modified"
    assert var.get() == "default"


def test_call_soon_explicit_context_none_is_default(loop):
    seen = []

    def body():
        var.set("captured")
        loop.call_soon(lambda: seen.append(var.get()), context=None)

    _in_fresh_context(body)
    run_once(loop)
    assert seen == ["captured"]


def test_timers_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")
    seen = []

    def body():
        var.set("implicit")
        loop.call_later(0, lambda: seen.append(("later", var.get())))
        loop.call_at(loop.time() - 1, lambda: seen.append(("at", var.get())))
        loop.call_later(0, lambda: seen.append(("ctx-later", var.get())),
                        context=ctx)
        loop.call_at(loop.time() - 1,
                     lambda: seen.append(("ctx-at", var.get())), context=ctx)

    _in_fresh_context(body)
    run_once(loop)
    assert sorted(seen) == sorted([
        ("later", "implicit"), ("at", "implicit"),
        ("ctx-later", "explicit"), ("ctx-at", "explicit"),
    ])


def test_call_soon_threadsafe_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")
    seen = []
    done = loop.create_future()

    def thread():
        var.set("thread")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        loop.call_soon_threadsafe(lambda: seen.append(var.get()),
                                  context=ctx)
        loop.call_soon_threadsafe(done.set_result, None)

    t = threading.Thread(target=thread)
    t.start()
    try:
        run(loop, done)
    finally:
        t.join()
    assert seen == ["thread", "explicit"]


def test_context_entered_per_callback(loop):
    # The same context can't be entered twice at once; each callback's
    # context is entered and exited around its call.
    ctx = contextvars.Context()
    seen = []

    def cb(n):
        seen.append(n)
        var.set(n)

    for n in range(5):
        loop.call_soon(cb, n, context=ctx)
    run_once(loop)
    assert seen == [0, 1, 2, 3, 4]
    assert ctx[var] == 4


def test_reentering_running_context_reported(loop, exc_records):
    # A callback that runs ctx.run() on the context it already runs in gets
    # the RuntimeError from contextvars; it reaches the exception handler.
    ctx = contextvars.Context()

    def cb():
        ctx.run(lambda: None)

    loop.call_soon(cb, context=ctx)
    run_once(loop)
    records = exc_records.take()
    assert len(records) == 1
    assert isinstance(records[0]["exception"], RuntimeError)


def test_reader_callback_context(loop):
    # add_reader captures the context when the reader is added.
    a, b = socket.socketpair()
    try:
        seen = loop.create_future()

        def on_read():
            a.recv(10)
            loop.remove_reader(a)
            seen.set_result(var.get())

        def body():
            var.set("reader")
            loop.add_reader(a, on_read)

        _in_fresh_context(body)
        b.send(b"x")
        assert run(loop, seen) == "reader"
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_task_context(loop):
    async def child():
        seen = var.get()
        var.set("child-set")
        return seen

    async def main():
        var.set("main")
        result = await asyncio.create_task(child())
        return result, var.get()

    assert _in_fresh_context(run, loop, main()) == ("main", "main")


def test_create_task_explicit_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "task-ctx")

    async def child():
        v = var.get()
        var.set("from-task")
        return v

    async def main():
        return await loop.create_task(child(), context=ctx)

    assert run(loop, main()) == "task-ctx"
    assert ctx[var] == "from-task"


def test_future_callbacks_context(loop):
    seen = []

    async def main():
        var.set("registered")
        fut = loop.create_future()
        fut.add_done_callback(lambda f: seen.append(var.get()))
        var.set("later")
        fut.set_result(None)
        await asyncio.sleep(0)

    _in_fresh_context(run, loop, main())
    assert seen == ["registered"]
