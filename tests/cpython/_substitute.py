"""Make every asyncio "real" event loop an aloop loop, and count them.

install() rebinds every name through which asyncio (and unittest, via
asyncio.Runner) builds a selector loop -- checked against asyncio/
unix_events.py, events.py, runners.py and unittest/async_case.py of 3.11,
3.12 and 3.13:

  asyncio.SelectorEventLoop, asyncio.unix_events.SelectorEventLoop
  asyncio.EventLoop, asyncio.unix_events.EventLoop            (3.13+)
  DefaultEventLoopPolicy._loop_factory (== _UnixDefaultEventLoopPolicy)
      -> asyncio.new_event_loop(), get_event_loop(), asyncio.run(),
         asyncio.Runner() and unittest.IsolatedAsyncioTestCase
         (Runner without loop_factory calls events.new_event_loop();
         IsolatedAsyncioTestCase.loop_factory is None by default on 3.13)

unix_events._UnixSelectorEventLoop is left alone: besides being
SelectorEventLoop's original binding and the policy's _loop_factory (both
replaced) nothing refers to it by name at run time, and aloop.Loop itself
subclasses it.  Loops that test.test_asyncio builds from CPython's private
classes (test_utils.TestLoop, base_events.BaseEventLoop(),
selector_events.BaseSelectorEventLoop subclasses, BaseProactorEventLoop)
are NOT replaced: those tests exercise CPython's machinery, not the loop.

built counts the aloop loops constructed; on_build (if set) is called on
each construction (the child uses it to report loops to the parent).
"""

import asyncio
import asyncio.events
import asyncio.unix_events

import aloop

built = 0
on_build = None


class SelectorEventLoop(aloop.Loop):
    """aloop.Loop standing in for asyncio.SelectorEventLoop: accepts and
    ignores a selector (aloop polls with its own epoll)."""

    def __init__(self, selector=None):
        global built
        built += 1
        if on_build is not None:
            on_build()
        super().__init__()


SelectorEventLoop.__module__ = __name__
SelectorEventLoop.__qualname__ = "SelectorEventLoop"


def install():
    """Substitute SelectorEventLoop for asyncio's loop everywhere."""
    for mod in (asyncio, asyncio.unix_events):
        mod.SelectorEventLoop = SelectorEventLoop
        if hasattr(mod, "EventLoop"):  # 3.13+
            mod.EventLoop = SelectorEventLoop
    for policy in (asyncio.DefaultEventLoopPolicy,
                   asyncio.unix_events._UnixDefaultEventLoopPolicy,
                   asyncio.unix_events.DefaultEventLoopPolicy):
        policy._loop_factory = SelectorEventLoop
    check()


def check():
    """Raise if the substitution did not take (e.g. a new asyncio binding)."""
    loop = asyncio.new_event_loop()
    try:
        assert type(loop) is SelectorEventLoop, type(loop)
    finally:
        loop.close()
    with asyncio.Runner() as runner:
        assert type(runner.get_loop()) is SelectorEventLoop
    asyncio.set_event_loop_policy(None)  # as before install()
    global built
    built = 0
