"""Handle and TimerHandle objects: the stdlib's public behaviour."""

import asyncio
import contextvars
import os
import sys
import weakref

import pytest

from _aloop_support import run_once

THIS_FILE = os.path.basename(__file__)


def cb(*args):
    pass


# ---------------------------------------------------------------- cancel


def test_handle_cancel_and_cancelled(loop):
    h = loop.call_soon(cb)
    assert not h.cancelled()
    assert h.cancel() is None
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    run_once(loop)


def test_timer_handle_cancel_and_cancelled(loop):
    h = loop.call_later(10, cb)
    when = h.when()
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()
    assert h.cancelled()
    assert h.when() == when
    run_once(loop)


def test_cancel_after_run_marks_cancelled(loop):
    # The stdlib lets cancel() be called after the callback ran; the handle
    # then reports cancelled() == True.
    calls = []
    h = loop.call_soon(calls.append, 1)
    t = loop.call_at(loop.time() - 1, calls.append, 2)
    run_once(loop)
    assert calls == [1, 2]
    assert not h.cancelled()
    assert not t.cancelled()
    h.cancel()
    t.cancel()
    assert h.cancelled()
    assert t.cancelled()
    run_once(loop)
    assert calls == [1, 2]


def test_handles_are_hashable_and_weakrefable(loop):
    h = loop.call_soon(cb)
    t = loop.call_later(10, cb)
    assert len({h, t}) == 2
    assert weakref.ref(h)() is h
    assert weakref.ref(t)() is t
    t.cancel()
    run_once(loop)


def test_handle_equality_is_identity(loop):
    h1 = loop.call_soon(cb)
    h2 = loop.call_soon(cb)
    assert h1 == h1
    assert h1 != h2
    run_once(loop)


# ---------------------------------------------------------------- TimerHandle


def test_timer_handle_ordering(loop):
    now = loop.time()
    h1 = loop.call_at(now + 100, cb)
    h2 = loop.call_at(now + 200, cb)
    assert h1 < h2
    assert h1 <= h2
    assert h2 > h1
    assert h2 >= h1
    assert not h2 < h1
    assert not h1 > h2
    assert h1 != h2
    assert sorted([h2, h1]) == [h1, h2]
    h1.cancel()
    h2.cancel()


def test_timer_handle_eq_and_hash(loop):
    when = loop.time() + 100
    h1 = loop.call_at(when, cb, 1)
    h2 = loop.call_at(when, cb, 1)
    h3 = loop.call_at(when, cb, 2)
    assert hash(h1) == hash(when) == hash(h1.when())
    assert hash(h1) == hash(h2)
    # Same when, callback, args and cancelled state: equal.
    assert h1 == h2
    assert h1 <= h2 and h1 >= h2
    assert not h1 < h2 and not h1 > h2
    assert h1 != h3
    h2.cancel()
    assert h1 != h2
    h1.cancel()
    h3.cancel()


def test_timer_handle_compare_with_other_types(loop):
    h = loop.call_later(100, cb)
    assert (h == 1) is False
    assert (h != 1) is True
    assert (h == object()) is False
    with pytest.raises(TypeError):
        h < 1
    with pytest.raises(TypeError):
        h >= "x"
    h.cancel()


def test_timer_handle_vs_handle_compare(loop):
    h = loop.call_soon(cb)
    t = loop.call_later(100, cb)
    assert (t == h) is False
    assert (h == t) is False
    with pytest.raises(TypeError):
        t < h
    t.cancel()
    run_once(loop)


# ---------------------------------------------------------------- repr


def test_handle_repr(loop):
    loop.set_debug(False)
    h = loop.call_soon(cb, 1, "a")
    r = repr(h)
    assert r.startswith("<Handle "), r
    assert r.endswith(">"), r
    assert "cb(" in r, r  # 3.13+ shows the arguments in debug mode only
    assert THIS_FILE in r, r
    assert "cancelled" not in r, r
    h.cancel()
    r = repr(h)
    assert r.startswith("<Handle cancelled"), r
    run_once(loop)


def test_timer_handle_repr(loop):
    loop.set_debug(False)
    h = loop.call_at(1234.5, cb, 7)
    r = repr(h)
    assert r.startswith("<TimerHandle when=1234.5 "), r
    assert "cb(" in r, r
    assert THIS_FILE in r, r
    h.cancel()
    r = repr(h)
    assert r.startswith("<TimerHandle cancelled when=1234.5"), r


def test_handle_repr_debug_mode_created_at(loop):
    loop.set_debug(True)
    h = loop.call_soon(cb)
    line = sys._getframe().f_lineno - 1
    r = repr(h)
    assert r.startswith("<Handle "), r
    assert f"created at {__file__}:{line}" in r, r
    # In debug mode a cancelled handle keeps its callback in the repr.
    h.cancel()
    r = repr(h)
    assert r.startswith("<Handle cancelled "), r
    assert "cb()" in r, r
    run_once(loop)


def test_timer_handle_repr_debug_mode_created_at(loop):
    loop.set_debug(True)
    h = loop.call_later(100, cb)
    line = sys._getframe().f_lineno - 1
    r = repr(h)
    assert r.startswith("<TimerHandle when="), r
    assert f"created at {__file__}:{line}" in r, r
    h.cancel()


# ---------------------------------------------------------------- tracebacks


def _check_source_traceback(h, line, func_name):
    tb = h._source_traceback
    assert tb, "no _source_traceback in debug mode"
    frame = tb[-1]
    assert frame.filename == __file__
    assert frame.lineno == line
    assert frame.name == func_name


def test_source_traceback_call_soon(loop):
    loop.set_debug(True)
    h = loop.call_soon(cb)
    _check_source_traceback(h, sys._getframe().f_lineno - 1,
                            "test_source_traceback_call_soon")
    run_once(loop)


def test_source_traceback_call_later(loop):
    loop.set_debug(True)
    h = loop.call_later(100, cb)
    _check_source_traceback(h, sys._getframe().f_lineno - 1,
                            "test_source_traceback_call_later")
    h.cancel()


def test_source_traceback_call_at(loop):
    loop.set_debug(True)
    h = loop.call_at(loop.time() + 100, cb)
    _check_source_traceback(h, sys._getframe().f_lineno - 1,
                            "test_source_traceback_call_at")
    h.cancel()


def test_source_traceback_call_soon_threadsafe(loop):
    loop.set_debug(True)
    h = loop.call_soon_threadsafe(cb)
    _check_source_traceback(h, sys._getframe().f_lineno - 1,
                            "test_source_traceback_call_soon_threadsafe")
    run_once(loop)


def test_no_source_traceback_without_debug(loop):
    loop.set_debug(False)
    h = loop.call_soon(cb)
    t = loop.call_later(100, cb)
    assert not h._source_traceback
    assert not t._source_traceback
    assert "created at" not in repr(h)
    t.cancel()
    run_once(loop)


# ---------------------------------------------------------------- context

needs_get_context = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12"
)


@needs_get_context
def test_get_context_explicit(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(cb, context=ctx)
    t = loop.call_later(100, cb, context=ctx)
    assert h.get_context() is ctx
    assert t.get_context() is ctx
    t.cancel()
    run_once(loop)


@needs_get_context
def test_get_context_default_is_copy(loop):
    var = contextvars.ContextVar("var")
    var.set("at-schedule")
    h = loop.call_soon(cb)
    t = loop.call_later(100, cb)
    for handle in (h, t):
        ctx = handle.get_context()
        assert isinstance(ctx, contextvars.Context)
        assert ctx[var] == "at-schedule"
    assert h.get_context() is not t.get_context()
    t.cancel()
    run_once(loop)


def test_handle_types_subclass_stdlib_handles(loop_kind, loop):
    h = loop.call_soon(cb)
    t = loop.call_later(100, cb)
    assert issubclass(type(h), asyncio.Handle)
    assert issubclass(type(t), asyncio.TimerHandle)
    assert type(h).__name__ == "Handle"
    assert type(t).__name__ == "TimerHandle"
    t.cancel()
    run_once(loop)


# ---------------------------------------------------------------- lifetime


def test_handles_outlive_their_loop(loop_factory):
    # Handles kept after the loop is closed and gone: using them is safe.
    import gc

    lp = loop_factory()
    h = lp.call_soon(cb, 1)
    t = lp.call_later(100, cb, 2)
    done = lp.call_soon(cb)
    lp.call_soon(lp.stop)
    lp.run_forever()
    lp.close()
    del lp
    gc.collect()
    for handle in (h, t, done):
        repr(handle)
        handle.cancel()
        assert handle.cancelled()
        repr(handle)
    assert t.when() > 0
    hash(t)


def test_cancel_handle_inside_its_own_callback(loop):
    handles = []

    def self_cancel():
        handles[0].cancel()

    handles.append(loop.call_soon(self_cancel))
    timer = loop.call_at(loop.time() - 1, lambda: timer.cancel())
    run_once(loop)
    assert handles[0].cancelled()
    assert timer.cancelled()
    run_once(loop)


def test_callback_holding_only_reference_to_handle(loop):
    # The queue owns the handle; callers may drop it immediately.
    import gc

    calls = []
    for i in range(100):
        loop.call_soon(calls.append, i)
        loop.call_at(loop.time() - 1, calls.append, 1000 + i)
    gc.collect()
    run_once(loop)
    assert sorted(calls) == list(range(100)) + list(range(1000, 1100))


@pytest.mark.parametrize("args, called_with", [
    ([1, 2], (1, 2)), ("ab", ("a", "b")), ({1: "x"}, (1,)),
], ids=["list", "str", "dict"])
def test_replaced_args_are_unpacked_like_star_args(loop, exc_records, args,
                                                   called_with):
    """Handle._run calls callback(*self._args): any iterable will do."""
    calls = []
    h = loop.call_soon(lambda *a: calls.append(a))
    h._args = args
    run_once(loop)
    assert calls == [called_with]


def test_replaced_args_not_iterable_goes_to_the_exception_handler(
        loop, exc_records):
    h = loop.call_soon(lambda *a: None)
    h._args = None
    run_once(loop)
    [ctx] = exc_records.take()
    assert isinstance(ctx["exception"], TypeError)
    assert "must be an iterable, not NoneType" in str(ctx["exception"])


@pytest.mark.parametrize("slot", ["_callback", "_args"])
def test_deleted_callback_or_args_raises_out_of_the_loop(loop, slot):
    """_run's own error handling reads _callback and _args again, so the
    AttributeError escapes run_forever()."""
    h = loop.call_soon(lambda: None)
    delattr(h, slot)
    loop.call_soon(loop.stop)
    with pytest.raises(AttributeError, match=slot):
        loop.run_forever()


def test_deleted_context_does_not_stop_the_loop(loop, exc_records):
    """Without _context the handle cannot run; the loop goes on (3.11
    reports the AttributeError through the exception handler, 3.12+ do
    not: only survival is common to all)."""
    h = loop.call_soon(lambda: None)
    del h._context
    calls = []
    loop.call_soon(calls.append, "next")
    run_once(loop)
    run_once(loop)
    assert calls == ["next"]
    exc_records.take()
