"""Debug mode: slow callbacks, thread checks, coroutine checks, warnings."""

import asyncio
import gc
import logging
import re
import sys
import threading
import time

import pytest

from _aloop_support import describe, run, run_child, run_once

SLOW_RE = re.compile(r"^Executing <(Handle|TimerHandle) .*> took \d+\.\d+ seconds$")


def slow_callback():
    time.sleep(0.06)


def test_set_debug_get_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        run_once(loop)
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(messages) == 1, messages
    assert SLOW_RE.match(messages[0]), messages[0]
    assert "slow_callback" in messages[0]


def test_slow_timer_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_at(loop.time() - 1, slow_callback)
        run_once(loop)
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(messages) == 1, messages
    assert messages[0].startswith("Executing <TimerHandle when="), messages
    assert SLOW_RE.match(messages[0]), messages[0]


def test_slow_task_step_warning_names_task(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_coro():
        time.sleep(0.06)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and "took" in r.getMessage()]
    assert any(m.startswith("Executing <Task ") and "slow_coro" in m
               for m in messages), messages


@pytest.mark.parametrize("where", ["connection_made", "data_received",
                                   "datagram_received"])
def test_slow_protocol_callback_warning_names_the_handle(loop, caplog, where):
    """A slow protocol callback is logged with the Handle the stdlib runs
    it in: the transport's _read_ready(), or connection_made(transport)."""
    import socket

    class Slow(asyncio.Protocol, asyncio.DatagramProtocol):
        def connection_made(self, transport):
            if where == "connection_made":
                slow_callback()

        def data_received(self, data):
            slow_callback()

        def datagram_received(self, data, addr):
            slow_callback()

    loop.set_debug(True)
    loop.slow_callback_duration = 0.03
    kind = socket.SOCK_DGRAM if where == "datagram_received" else \
        socket.SOCK_STREAM
    a, b = socket.socketpair(socket.AF_UNIX, kind)

    async def main():
        if kind == socket.SOCK_DGRAM:
            tr, _ = await loop.create_datagram_endpoint(Slow, sock=a)
        else:
            tr, _ = await loop.connect_accepted_socket(Slow, a)
        await asyncio.sleep(0.01)
        b.send(b"x")
        await asyncio.sleep(0.1)
        tr.close()
        await asyncio.sleep(0.01)

    with b, caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and "took" in r.getMessage()]
    expected = (r"^Executing <Handle .*Slow\.connection_made\(<.*>\)"
                if where == "connection_made" else
                r"^Executing <Handle \w+\._read_ready\(\)")
    assert [m for m in messages if re.match(expected, m)], messages


def test_no_slow_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_callback)
        run_once(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_no_slow_warning_for_fast_callback(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 10
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(lambda: None)
        run_once(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


NOT_THREADSAFE = ("Non-thread-safe operation invoked on an event loop other "
                  "than the current one")


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_other_thread(loop, method):
    loop.set_debug(True)
    errors = []

    def thread():
        try:
            if method == "call_soon":
                loop.call_soon(lambda: None)
            elif method == "call_later":
                loop.call_later(1, lambda: None)
            else:
                loop.call_at(loop.time() + 1, lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=thread).start())
    loop.call_later(30, loop.stop)  # safety net
    loop.run_forever()
    assert errors == [NOT_THREADSAFE]


def test_threadsafe_call_allowed_from_other_thread_in_debug(loop):
    loop.set_debug(True)
    got = loop.create_future()

    def thread():
        loop.call_soon_threadsafe(got.set_result, "ok")

    loop.call_soon(lambda: threading.Thread(target=thread).start())
    assert run(loop, got) == "ok"


def test_other_thread_allowed_when_loop_not_running(loop):
    # The thread check only applies while the loop runs in another thread.
    loop.set_debug(True)
    handles = []
    t = threading.Thread(target=lambda: handles.append(
        loop.call_soon(lambda: None)))
    t.start()
    t.join()
    assert len(handles) == 1
    run_once(loop)


async def coro_func():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_coroutine_function_refused_in_debug(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError,
                       match=rf"^coroutines cannot be used with {method}\(\)$"):
        getattr(loop, method)(coro_func)


def test_coroutine_object_refused_in_debug(loop):
    loop.set_debug(True)
    coro = coro_func()
    try:
        with pytest.raises(
                TypeError,
                match=r"^coroutines cannot be used with call_soon\(\)$"):
            loop.call_soon(coro)
    finally:
        coro.close()


def test_coroutine_refused_by_timers_in_debug(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"^coroutines cannot be used with "):
        loop.call_later(1, coro_func)
    with pytest.raises(TypeError,
                       match=r"^coroutines cannot be used with call_at\(\)$"):
        loop.call_at(loop.time() + 1, coro_func)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_non_callable_refused_in_debug(loop, method):
    loop.set_debug(True)
    with pytest.raises(TypeError,
                       match=rf"^a callable object was expected by {method}\(\)"):
        getattr(loop, method)(42)


def test_unclosed_loop_resource_warning(loop_factory):
    loop = loop_factory()
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()


def test_closed_loop_no_resource_warning(loop_factory, recwarn):
    loop = loop_factory()
    loop.close()
    del loop
    gc.collect()
    assert not [w for w in recwarn.list
                if issubclass(w.category, ResourceWarning)
                and "event loop" in str(w.message)]


def test_coroutine_origin_tracking_in_debug(loop):
    loop.set_debug(True)
    before = sys.get_coroutine_origin_tracking_depth()
    inside = []
    loop.call_soon(lambda: inside.append(
        sys.get_coroutine_origin_tracking_depth()))
    run_once(loop)
    assert inside[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_no_coroutine_origin_tracking_without_debug(loop):
    loop.set_debug(False)
    inside = []
    loop.call_soon(lambda: inside.append(
        sys.get_coroutine_origin_tracking_depth()))
    run_once(loop)
    assert inside == [0]


def test_debug_exception_context_has_source_traceback(loop, exc_records):
    loop.set_debug(True)

    def failing():
        raise ValueError("x")

    h = loop.call_soon(failing)
    run_once(loop)
    [ctx] = exc_records.take()
    assert ctx["handle"] is h
    assert ctx["source_traceback"]
    assert ctx["source_traceback"][-1].filename == __file__


DEBUG_ENV_CHILD = """
loop = new_loop()
print(type(loop).__module__.split(".")[0], loop.get_debug())
loop.close()
async def main():
    return asyncio.get_running_loop().get_debug()
print(run(main()))
"""


@pytest.mark.parametrize("setting", ["env", "devmode", "off"])
def test_debug_from_environment(loop_kind, setting):
    env = {"PYTHONASYNCIODEBUG": "", "PYTHONDEVMODE": ""}
    args = ()
    if setting == "env":
        env["PYTHONASYNCIODEBUG"] = "1"
    elif setting == "devmode":
        env["PYTHONDEVMODE"] = "1"
    proc = run_child(loop_kind, DEBUG_ENV_CHILD, env=env, args=args)
    assert proc.returncode == 0, describe(proc)
    expected = "True" if setting != "off" else "False"
    first, second = proc.stdout.splitlines()
    assert first.split()[1] == expected, describe(proc)
    assert second == expected, describe(proc)
    assert first.split()[0] == loop_kind, describe(proc)
