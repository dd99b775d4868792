"""aloop: asyncio's event loop with its core written in C.

    import aloop
    aloop.run(main())                                        # like asyncio.run
    asyncio.run(main(), loop_factory=aloop.new_event_loop)   # 3.12+
    asyncio.Runner(loop_factory=aloop.new_event_loop)        # 3.11+
    aloop.install()          # every new asyncio loop is an aloop loop

The C type aloop._core.Loop comes first in Loop's MRO; whatever it does not
define is the standard library's own SelectorEventLoop code, which calls
back into the C core through the private hooks CPython's loop offers.
"""
import asyncio as _asyncio
import sys as _sys

from . import _core

__all__ = ("Loop", "new_event_loop", "run", "EventLoopPolicy", "install")
__version__ = "0.1.0"


class Loop(_core.Loop, _asyncio.SelectorEventLoop):
    """An asyncio event loop whose core (scheduling, timers, polling,
    signals) is C.  Accepts and ignores a `selector` argument."""

    __module__ = "aloop"


def new_event_loop():
    """Return a new aloop event loop."""
    return Loop()


def run(main, *, debug=None):
    """Run a coroutine on a new aloop loop, like asyncio.run()."""
    if _asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "asyncio.run() cannot be called from a running event loop")
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


class EventLoopPolicy(_asyncio.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are aloop loops."""

    __module__ = "aloop"

    _loop_factory = Loop


def install():
    """Make aloop the loop of asyncio.run(), new_event_loop() and
    get_event_loop() by installing EventLoopPolicy."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())
