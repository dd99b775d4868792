"""add_signal_handler / remove_signal_handler, SIGINT and KeyboardInterrupt.

Signals are sent to this process with os.kill(); SIGINT is only ever sent
to child processes.  SIGALRM is left alone (pytest-timeout uses it).
"""

import asyncio
import os
import signal
import threading

import pytest

from _aloop_support import TIMEOUT, describe, run, run_child

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def restore_signals():
    """Restore handlers and the wakeup fd whatever the test did."""
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)


def _wakeup_fd():
    """The current wakeup fd, without changing it."""
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        signal.set_wakeup_fd(fd)
    return fd


# ---------------------------------------------------------------- delivery


def test_signal_delivered_as_loop_callback(loop):
    got = loop.create_future()

    def handler(*args):
        got.set_result((args, asyncio.get_running_loop(),
                        threading.current_thread()))

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    args, running, thread = run(loop, got)
    assert args == ("a", 2)
    assert running is loop
    assert thread is threading.main_thread()
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_wakes_idle_loop(loop):
    # The loop blocks in its poll with no timer at all; a signal sent from
    # another thread must wake it.
    got = []

    def handler():
        got.append(signal.SIGUSR1)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler)
    killer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    watchdog = threading.Timer(TIMEOUT, loop.call_soon_threadsafe,
                               (loop.stop,))
    killer.start()
    watchdog.start()
    try:
        loop.run_forever()
    finally:
        killer.join()
        watchdog.cancel()
        watchdog.join()
    assert got == [signal.SIGUSR1]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_handler_not_called_synchronously(loop):
    # The callback runs from the loop, not from inside os.kill().
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "sig")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert calls == []
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == ["sig"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_two_signals_two_handlers(loop):
    calls = []
    done = loop.create_future()

    def on(sig):
        calls.append(sig)
        if len(set(calls)) == 2 and not done.done():
            done.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, on, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, on, "usr2")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
    run(loop, done)
    assert sorted(set(calls)) == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR2)


def test_signal_repeated(loop):
    calls = []
    done = loop.create_future()

    def on():
        calls.append(1)
        if len(calls) < 5:
            os.kill(os.getpid(), signal.SIGUSR1)
        elif not done.done():
            done.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, on)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    run(loop, done)
    assert len(calls) == 5
    loop.remove_signal_handler(signal.SIGUSR1)


def test_replace_signal_handler(loop):
    calls = []
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: (calls.append("second"),
                                 done.set_result(None)))
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    run(loop, done)
    assert calls == ["second"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_handler_exception_goes_to_handler(loop, exc_records):
    def failing():
        loop.call_soon(loop.stop)
        raise ZeroDivisionError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, failing)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(TIMEOUT, loop.stop)
    loop.run_forever()
    [ctx] = exc_records.take()
    assert ctx["message"].startswith("Exception in callback "), ctx
    assert isinstance(ctx["exception"], ZeroDivisionError)
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_as_signals_enum(loop):
    got = loop.create_future()
    loop.add_signal_handler(signal.Signals.SIGUSR2, got.set_result, "enum")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
    assert run(loop, got) == "enum"
    assert loop.remove_signal_handler(signal.SIGUSR2) is True


def test_python_signal_handler_threadsafe_call_wakes_loop(loop):
    # A plain Python signal handler (signal.signal, not the loop's) runs
    # while the loop sleeps in its poll and calls call_soon_threadsafe():
    # that must wake the loop (asyncio.Runner's SIGINT handling relies on
    # it).  The watchdog thread only stops the loop if that did not happen.
    watchdog_fired = threading.Event()
    seen = []

    def callback():
        seen.append("late" if watchdog_fired.is_set() else "on-time")
        loop.stop()

    def py_handler(signum, frame):
        loop.call_soon_threadsafe(callback)

    def watchdog():
        watchdog_fired.set()
        loop.call_soon_threadsafe(loop.stop)

    signal.signal(signal.SIGUSR1, py_handler)
    far = loop.call_later(3600, lambda: None)
    killer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    dog = threading.Timer(5, watchdog)
    killer.start()
    dog.start()
    try:
        loop.run_forever()
    finally:
        killer.join()
        dog.cancel()
        dog.join()
        far.cancel()
    assert seen == ["on-time"]


def test_python_signal_handler_stop_waits_for_the_wait_to_end(loop):
    """A plain Python signal handler that calls loop.stop() while the loop
    sleeps: the stdlib's selector retries its wait after the handler (PEP
    475), so the loop stops only once the wait ends -- here when a timer
    due 0.3 s later fires -- and that timer still runs."""
    seen = []

    def py_handler(signum, frame):
        seen.append("handler")
        loop.stop()

    signal.signal(signal.SIGUSR1, py_handler)
    loop.call_later(0.3, seen.append, "timer")
    killer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    killer.start()
    try:
        loop.run_forever()
    finally:
        killer.join()
    assert seen == ["handler", "timer"]


# ---------------------------------------------------------------- removal


def test_remove_signal_handler_return_values(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_restores_default_disposition(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
    loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_set_and_cleared(loop):
    assert _wakeup_fd() == -1
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    assert _wakeup_fd() != -1
    loop.remove_signal_handler(signal.SIGUSR1)
    assert _wakeup_fd() != -1  # still one handler
    loop.remove_signal_handler(signal.SIGUSR2)
    assert _wakeup_fd() == -1


def test_removed_handler_not_called(loop):
    calls = []
    # Keep SIGUSR1 harmless once the loop's handler is removed.
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    loop.remove_signal_handler(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, lambda *a: None)
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []
    loop.remove_signal_handler(signal.SIGUSR2)


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert _wakeup_fd() == -1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError, match=f"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(sig, lambda: None)
    # Nothing stays registered.
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert _wakeup_fd() == -1


def test_sigkill_message(loop):
    with pytest.raises(RuntimeError, match="^sig 9 cannot be caught$"):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)


@pytest.mark.parametrize("sig", [0, -1, 1000, signal.NSIG])
def test_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError, match=f"invalid signal number {sig}"):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(ValueError, match=f"invalid signal number {sig}"):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["SIGUSR1", 10.0, None, b"\x0a"])
def test_signal_not_int(loop, sig):
    with pytest.raises(TypeError, match="^sig must be an int, not "):
        loop.add_signal_handler(sig, lambda: None)
    with pytest.raises(TypeError, match="^sig must be an int, not "):
        loop.remove_signal_handler(sig)


def test_coroutine_callback_refused(loop):
    async def coro_func():
        pass

    with pytest.raises(TypeError,
                       match="coroutines cannot be used with add_signal_handler"):
        loop.add_signal_handler(signal.SIGUSR1, coro_func)
    coro = coro_func()
    try:
        with pytest.raises(
                TypeError,
                match="coroutines cannot be used with add_signal_handler"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_signal_handler_from_other_thread(loop):
    errors = []

    def thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_add_signal_handler_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


# ---------------------------------------------------------------- SIGINT


KEYBOARD_INTERRUPT_CHILD = """
import signal

async def main():
    loop = asyncio.get_running_loop()
    print("loop-ok" if isinstance(loop, LOOP_CLASS) else
          f"wrong loop {type(loop)}", flush=True)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        raise
    finally:
        print("finally", flush=True)

run(main())
print("not reached", flush=True)
"""


def test_keyboard_interrupt_in_run(loop_kind):
    # asyncio.run / aloop.run: SIGINT cancels the main task, which runs its
    # finally block, then KeyboardInterrupt is raised out of run().
    proc = run_child(loop_kind, KEYBOARD_INTERRUPT_CHILD)
    assert proc.returncode != 0, describe(proc)
    assert "KeyboardInterrupt" in proc.stderr, describe(proc)
    lines = proc.stdout.split()
    assert lines == ["loop-ok", "cancelled", "finally"], describe(proc)


KEYBOARD_INTERRUPT_DELAYED_CHILD = """
import signal, threading

late = threading.Event()

async def main():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, LOOP_CLASS), type(loop)
    # Sent from another thread while the loop sleeps in its poll.
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    # Long after the SIGINT and long before the sleep ends.
    marker = threading.Timer(5, late.set)
    marker.daemon = True  # don't keep the process alive for it
    marker.start()
    try:
        # Runner's SIGINT handler cancels this task and wakes the loop with
        # call_soon_threadsafe: the sleep must be interrupted right away,
        # not when it ends.
        await asyncio.sleep(10)
        print("sleep-completed", flush=True)
    except asyncio.CancelledError:
        print("cancelled-late" if late.is_set() else "cancelled", flush=True)
        raise
    finally:
        print("finally", flush=True)

run(main())
"""


def test_keyboard_interrupt_while_blocked_in_poll(loop_kind):
    proc = run_child(loop_kind, KEYBOARD_INTERRUPT_DELAYED_CHILD)
    assert proc.returncode != 0, describe(proc)
    assert "KeyboardInterrupt" in proc.stderr, describe(proc)
    assert proc.stdout.split() == ["cancelled", "finally"], describe(proc)


RUN_FOREVER_SIGINT_CHILD = """
import signal, threading

loop = new_loop()
threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
loop.call_later(30, loop.stop)
try:
    loop.run_forever()
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
print("running" if loop.is_running() else "stopped", flush=True)
print(asyncio.events._get_running_loop(), flush=True)
print(loop.run_until_complete(asyncio.sleep(0, "usable")), flush=True)
loop.close()
"""


def test_keyboard_interrupt_out_of_run_forever(loop_kind):
    # Default SIGINT handler: KeyboardInterrupt escapes run_forever even
    # while the loop is blocked in its poll, and the loop stays usable.
    proc = run_child(loop_kind, RUN_FOREVER_SIGINT_CHILD)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split() == [
        "KeyboardInterrupt", "stopped", "None", "usable"], describe(proc)


SIGINT_HANDLER_CHILD = """
import signal

loop = new_loop()
got = loop.create_future()
loop.add_signal_handler(signal.SIGINT, got.set_result, "handled")
loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
print(loop.run_until_complete(asyncio.wait_for(got, 30)), flush=True)
loop.remove_signal_handler(signal.SIGINT)
loop.close()
"""


def test_sigint_with_loop_handler(loop_kind):
    proc = run_child(loop_kind, SIGINT_HANDLER_CHILD)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split() == ["handled"], describe(proc)
