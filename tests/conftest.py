"""Fixtures: every behaviour test runs on stock asyncio AND on aloop.

- `loop_kind`      "asyncio" or "aloop" (the parametrization)
- `loop_factory`   zero-argument callable creating a new loop of that kind
- `loop`           a new loop with a recording exception handler; on teardown
                   it is closed.  The test fails if the exception handler was
                   called and the test did not consume the records
- `exc_records`    the recorder installed on `loop` (use `.take()`)

If aloop cannot be imported, every "aloop" test fails (it is never skipped).
"""

import asyncio
import faulthandler
import signal
import sys

import pytest

from _aloop_support import LOOP_KINDS, new_loop_function

# A shell starting pytest in the background (`cmd &` without job control,
# nohup) leaves SIGINT ignored; Python then installs no KeyboardInterrupt
# handler, and neither would the child interpreters the SIGINT tests start.
# Give them the terminal's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Per-test bound (seconds) used only when pytest-timeout is not installed
# (with it, pyproject's `timeout` setting or --timeout applies).
DEFAULT_TEST_TIMEOUT = 300


class ExceptionRecorder:
    """An exception handler that records the context dicts it receives."""

    def __init__(self):
        self.records = []

    def __call__(self, loop, context):
        self.records.append(context)

    def take(self):
        """Return the records so far and forget them."""
        records, self.records = self.records, []
        return records

    def describe(self):
        lines = []
        for ctx in self.records:
            exc = ctx.get("exception")
            lines.append(f"  message={ctx.get('message')!r} exception={exc!r}")
        return "\n".join(lines)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    return new_loop_function(loop_kind)


@pytest.fixture
def exc_records():
    return ExceptionRecorder()


@pytest.fixture
def loop(loop_factory, exc_records):
    lp = loop_factory()
    lp.set_exception_handler(exc_records)
    try:
        yield lp
    finally:
        if not lp.is_closed() and not lp.is_running():
            lp.close()
        asyncio.set_event_loop(None)
    if exc_records.records:
        pytest.fail(
            "exception handler called unexpectedly:\n"
            + exc_records.describe(),
            pytrace=False,
        )


@pytest.fixture
def restore_policy():
    """Restore the event loop policy (and current loop) after the test."""
    policy = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # Unexpected exception-handler calls fail the test itself (the `loop`
    # fixture's teardown catches whatever is recorded later, as an error).
    outcome = yield
    rec = getattr(item, "funcargs", {}).get("exc_records")
    if (rec is None or not rec.records or outcome.excinfo is not None
            or not hasattr(outcome, "force_exception")):
        return
    msg = "exception handler called unexpectedly:\n" + rec.describe()
    rec.take()
    outcome.force_exception(pytest.fail.Exception(msg, pytrace=False))


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Without pytest-timeout, dump tracebacks and exit if a test hangs."""
    if request.config.pluginmanager.hasplugin("timeout"):
        yield
        return
    faulthandler.dump_traceback_later(DEFAULT_TEST_TIMEOUT, exit=True,
                                      file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
