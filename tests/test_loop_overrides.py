"""A loop subclass that overrides a method the stdlib's own code calls
through self -- create_future (which the sock_* methods wait on), the
accept loop's _accept_connection, _accept_connection2 and
_make_socket_transport, run_forever's _run_once and (3.13) its
_run_forever_setup/_run_forever_cleanup -- has the override called, as on
stock asyncio.  (An overridden time() is in test_timers.)"""

import asyncio
import socket
import sys
import threading
from unittest import mock

import pytest

from _aloop_support import TIMEOUT, loop_class, run
from _net_support import EchoProtocol, LOCALHOST4, listener, tcp_pair


class RecordedFuture(asyncio.Future):
    pass


@pytest.fixture
def subclass_loop(loop_kind, exc_records):
    """new(**methods): an instance of a subclass of this kind's loop class
    with these methods, closed at teardown."""
    loops = []

    def new(**methods):
        cls = type("Subclassed", (loop_class(loop_kind),), methods)
        lp = cls()
        lp.set_exception_handler(exc_records)
        loops.append(lp)
        return lp

    yield new
    for lp in loops:
        lp.close()
    assert not exc_records.records, exc_records.describe()


def recording_create_future(self):
    fut = RecordedFuture(loop=self)
    self.futures.append(fut)
    return fut


def run_counting(loop, coro):
    """Run coro with a time bound that creates no future of its own."""
    async def bounded():
        async with asyncio.timeout(TIMEOUT):
            return await coro

    return loop.run_until_complete(bounded())


async def until(condition):
    """Let the loop run (without a future: sleep(0)) until condition()."""
    while not condition():
        await asyncio.sleep(0)


def start_waiting(loop, op, a, b):
    """Start sock op `op` on `a`, in a state where it has to wait; return
    its task and a function that lets it complete."""
    if op == "sock_recv":
        return (asyncio.ensure_future(loop.sock_recv(a, 100)),
                lambda: b.send(b"x"))
    if op == "sock_recv_into":
        buf = bytearray(100)
        return (asyncio.ensure_future(loop.sock_recv_into(a, buf)),
                lambda: b.send(b"x"))
    if op == "sock_sendall":
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = b"y" * (1 << 20)

        def read_all():
            b.setblocking(True)
            got = 0
            while got < len(data):
                got += len(b.recv(1 << 20))

        task = asyncio.ensure_future(loop.sock_sendall(a, data))
        reader = threading.Thread(target=read_all)
        task.add_done_callback(lambda _: reader.join())
        return task, reader.start
    assert op == "sock_accept"
    lsock = listener()
    lsock.setblocking(False)
    client = socket.socket()

    def connect():
        client.connect(lsock.getsockname())

    task = asyncio.ensure_future(loop.sock_accept(lsock))
    task.add_done_callback(lambda _: (lsock.close(), client.close()))
    return task, connect


@pytest.mark.parametrize(
    "op", ["sock_recv", "sock_recv_into", "sock_sendall", "sock_accept"])
def test_waiting_sock_op_waits_on_overridden_create_future(subclass_loop, op):
    loop = subclass_loop(create_future=recording_create_future)
    loop.futures = []
    a, b = tcp_pair()

    async def main():
        task, unblock = start_waiting(loop, op, a, b)
        await until(lambda: loop.futures or task.done())
        assert not task.done()
        unblock()
        result = await task
        if op == "sock_sendall":
            assert result is None
        assert len(loop.futures) == 1
        assert loop.futures[0].done()
        return result

    try:
        result = run_counting(loop, main())
    finally:
        a.close()
        b.close()
    if op == "sock_accept":
        conn, _ = result
        conn.close()


def test_sock_recv_waits_on_instance_patched_create_future(subclass_loop):
    loop = subclass_loop()
    a, b = tcp_pair()
    created = []
    original = loop.create_future

    def create_future():
        created.append(original())
        return created[-1]

    async def main():
        with mock.patch.object(loop, "create_future", create_future):
            task = asyncio.ensure_future(loop.sock_recv(a, 10))
            await until(lambda: created)
            b.send(b"data")
            assert await task == b"data"
        # Unpatched: the loop's own again.
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        for _ in range(3):
            await asyncio.sleep(0)
        b.send(b"more")
        assert await task == b"more"
        assert len(created) == 1

    try:
        run_counting(loop, main())
    finally:
        a.close()
        b.close()


async def echo_once(loop, port):
    reader, writer = await asyncio.open_connection(LOCALHOST4, port)
    writer.write(b"ping")
    data = await reader.readexactly(4)
    writer.close()
    await writer.wait_closed()
    return data


def serve_and_echo(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, LOCALHOST4, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await echo_once(loop, port)
        finally:
            server.close()
            await server.wait_closed()

    return run(loop, main())


def test_accepted_connection_uses_overridden_make_socket_transport(
        subclass_loop):
    made = []

    def _make_socket_transport(self, sock, protocol, *args, **kwargs):
        made.append(type(protocol).__name__)
        return super(type(self), self)._make_socket_transport(
            sock, protocol, *args, **kwargs)

    loop = subclass_loop(_make_socket_transport=_make_socket_transport)
    assert serve_and_echo(loop) == b"ping"
    # The client's connection and the accepted one.
    assert sorted(made) == ["EchoProtocol", "StreamReaderProtocol"]


def test_accepted_connection_uses_overridden_accept_connection2(subclass_loop):
    calls = []

    def _accept_connection2(self, protocol_factory, conn, extra, *args,
                            **kwargs):
        calls.append(extra["peername"])
        return super(type(self), self)._accept_connection2(
            protocol_factory, conn, extra, *args, **kwargs)

    loop = subclass_loop(_accept_connection2=_accept_connection2)
    assert serve_and_echo(loop) == b"ping"
    assert len(calls) == 1 and calls[0][0] == LOCALHOST4


def test_server_readiness_runs_overridden_accept_connection(subclass_loop):
    calls = []

    def _accept_connection(self, protocol_factory, sock, *args, **kwargs):
        calls.append(sock.fileno())
        return super(type(self), self)._accept_connection(
            protocol_factory, sock, *args, **kwargs)

    loop = subclass_loop(_accept_connection=_accept_connection)
    assert serve_and_echo(loop) == b"ping"
    assert len(calls) >= 1


# ------------------------------------------------------------- run_forever

PY313 = sys.version_info >= (3, 13)


def test_run_forever_runs_overridden_run_once(subclass_loop):
    """BaseEventLoop.run_forever calls self._run_once() per iteration."""
    def _run_once(self):
        self.iterations += 1
        super(type(self), self)._run_once()

    loop = subclass_loop(_run_once=_run_once)
    loop.iterations = 0

    async def main():
        for _ in range(3):
            await asyncio.sleep(0)
        return "done"

    assert loop.run_until_complete(main()) == "done"
    assert loop.iterations >= 4


def test_run_forever_runs_instance_patched_run_once(subclass_loop):
    loop = subclass_loop()
    calls = []
    original = loop._run_once

    def counting():
        calls.append(None)
        original()

    with mock.patch.object(loop, "_run_once", counting):
        loop.run_until_complete(asyncio.sleep(0))
    assert len(calls) >= 2
    n = len(calls)
    loop.run_until_complete(asyncio.sleep(0))
    assert len(calls) == n


@pytest.mark.skipif(not PY313, reason="_run_forever_setup/_cleanup are 3.13's")
def test_run_forever_runs_overridden_setup_and_cleanup(subclass_loop):
    def _run_forever_setup(self):
        self.calls.append(("setup", asyncio._get_running_loop()))
        super(type(self), self)._run_forever_setup()

    def _run_forever_cleanup(self):
        self.calls.append(("cleanup", asyncio._get_running_loop()))
        super(type(self), self)._run_forever_cleanup()

    loop = subclass_loop(_run_forever_setup=_run_forever_setup,
                         _run_forever_cleanup=_run_forever_cleanup)
    loop.calls = []
    loop.run_until_complete(asyncio.sleep(0))
    assert loop.calls == [("setup", None), ("cleanup", loop)]
    assert asyncio._get_running_loop() is None


@pytest.mark.skipif(not PY313, reason="_run_forever_setup/_cleanup are 3.13's")
def test_subclass_drives_the_loop_with_setup_run_once_cleanup(subclass_loop):
    """What a GUI integration does on 3.13: its own run_forever made of
    _run_forever_setup(), _run_once() until _stopping, and
    _run_forever_cleanup(); tasks, timers and async generator finalization
    work, and the loop's running state is set inside and cleared after."""
    def run_forever(self):
        self._run_forever_setup()
        try:
            while not self._stopping:
                self._run_once()
        finally:
            self._run_forever_cleanup()

    loop = subclass_loop(run_forever=run_forever)
    hooks_before = sys.get_asyncgen_hooks()
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        assert loop.is_running()
        assert asyncio.get_running_loop() is loop
        assert loop._thread_id == threading.get_ident()
        assert sys.get_asyncgen_hooks() != hooks_before
        async for _ in agen():
            break
        await asyncio.sleep(0.01)
        await loop.shutdown_asyncgens()
        return "done"

    assert loop.run_until_complete(main()) == "done"
    assert closed == [True]
    assert not loop.is_running() and loop._thread_id is None
    assert asyncio._get_running_loop() is None
    assert sys.get_asyncgen_hooks() == hooks_before


@pytest.mark.skipif(not PY313, reason="_run_forever_setup/_cleanup are 3.13's")
@pytest.mark.parametrize("copied", ["setup", "setup and cleanup"])
def test_python_reimplementation_of_setup_and_cleanup(subclass_loop, copied):
    """A subclass whose _run_forever_setup (and _cleanup) are the stdlib's
    own 3.13 code, copied (as GUI integrations do): its attribute
    assignments (_thread_id, _old_agen_hooks, even as a list) drive the
    loop, also when the loop's own cleanup undoes them."""
    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = list(sys.get_asyncgen_hooks())
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                               finalizer=self._asyncgen_finalizer_hook)
        asyncio.events._set_running_loop(self)

    def _run_forever_cleanup(self):
        self._stopping = False
        self._thread_id = None
        asyncio.events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    methods = dict(_run_forever_setup=_run_forever_setup)
    if copied == "setup and cleanup":
        methods.update(_run_forever_cleanup=_run_forever_cleanup)
    loop = subclass_loop(**methods)
    hooks_before = sys.get_asyncgen_hooks()

    async def main():
        assert loop.is_running()
        assert loop._thread_id == threading.get_ident()
        await asyncio.sleep(0)
        return "done"

    assert loop.run_until_complete(main()) == "done"
    assert not loop.is_running() and loop._thread_id is None
    assert sys.get_asyncgen_hooks() == hooks_before


@pytest.mark.skipif(not PY313, reason="_run_forever_setup/_cleanup are 3.13's")
def test_cleanup_runs_as_a_finally_block_when_run_once_raises(subclass_loop):
    """run_forever's cleanup runs in its `finally:` block: the error that
    ended the loop is the one being handled there, and what the cleanup
    raises is chained to it."""
    seen = []

    def _run_once(self):
        raise ValueError("run_once")

    def _run_forever_cleanup(self):
        seen.append(repr(sys.exception()))
        super(type(self), self)._run_forever_cleanup()
        try:
            raise KeyError("inner")
        except KeyError:
            raise OSError("cleanup")

    loop = subclass_loop(_run_once=_run_once,
                         _run_forever_cleanup=_run_forever_cleanup)
    with pytest.raises(OSError) as info:
        loop.run_forever()
    assert seen == ["ValueError('run_once')"]
    inner = info.value.__context__
    assert repr(inner) == "KeyError('inner')"
    assert repr(inner.__context__) == "ValueError('run_once')"
    assert not loop.is_running()


# ------------------------------------------------------------------ timers


def test_call_later_and_cancel_run_overridden_timer_hooks(subclass_loop):
    """call_later() (and so asyncio.sleep()) schedules through
    self.call_at(), and TimerHandle.cancel() tells the loop through
    _timer_handle_cancelled(), as in the stdlib."""
    seen = []

    def call_at(self, when, callback, *args, context=None):
        seen.append(("call_at", callback, args, context))
        return super(type(self), self).call_at(when, callback, *args,
                                               context=context)

    def _timer_handle_cancelled(self, handle):
        seen.append(("cancelled", handle))
        super(type(self), self)._timer_handle_cancelled(handle)

    loop = subclass_loop(call_at=call_at,
                         _timer_handle_cancelled=_timer_handle_cancelled)
    h = loop.call_later(10, print, 1, 2)
    assert seen == [("call_at", print, (1, 2), None)]
    h.cancel()
    h.cancel()  # once only
    assert seen[1:] == [("cancelled", h)]
    assert loop._timer_cancelled_count == 1
    seen.clear()
    assert loop.run_until_complete(asyncio.sleep(0.001, "slept")) == "slept"
    # sleep() cancels its (fired) timer on the way out
    assert [s[0] for s in seen] == ["call_at", "cancelled"]
