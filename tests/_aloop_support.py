"""Helpers shared by the aloop test suite (imported by conftest and tests).

Every behaviour test runs on two loop kinds: "asyncio" (the standard
library's selector event loop) and "aloop".  The helpers here know how to
make a loop of either kind, in this process or in a child process.
"""

import asyncio
import os
import subprocess
import sys
import textwrap

LOOP_KINDS = ("asyncio", "aloop")

# Upper bound for anything a test awaits (seconds).  Generous: the suite also
# runs under AddressSanitizer and with PYTHONASYNCIODEBUG=1.
TIMEOUT = 30.0

# Upper bound for a child process (seconds).
CHILD_TIMEOUT = 60.0


def import_aloop():
    """Import aloop, turning any failure into a test failure (never a skip)."""
    import pytest

    try:
        import aloop
    except Exception as exc:  # ImportError, or anything the module raises
        pytest.fail(f"cannot import aloop: {exc!r}", pytrace=False)
    return aloop


def stdlib_new_event_loop():
    """A stock asyncio selector loop, whatever event loop policy is set."""
    return asyncio.SelectorEventLoop()


def new_loop_function(kind):
    if kind == "asyncio":
        return stdlib_new_event_loop
    return import_aloop().new_event_loop


def run_function(kind):
    """asyncio.run or aloop.run."""
    if kind == "asyncio":
        return asyncio.run
    return import_aloop().run


def loop_class(kind):
    """The class every loop of this kind is an instance of."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    return import_aloop().Loop


def is_kind(loop, kind):
    """True if `loop` is a loop of the given kind (and not of the other)."""
    if kind == "asyncio":
        mod = type(loop).__module__
        return isinstance(loop, asyncio.SelectorEventLoop) and (
            mod.startswith("asyncio.")
        )
    return isinstance(loop, import_aloop().Loop)


def run(loop, coro_or_future, timeout=TIMEOUT):
    """run_until_complete with an upper bound on the time it may take."""
    return loop.run_until_complete(
        asyncio.wait_for(coro_or_future, timeout)
    )


def run_once(loop):
    """Run exactly one iteration of the loop (stdlib idiom)."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def child_env(kind, extra=None):
    """Environment for a child Python that must import aloop the same way
    this process did (editable install, in-place build or installed wheel).
    """
    env = dict(os.environ)
    env["ALOOP_TEST_KIND"] = kind
    if extra:
        env.update(extra)
    if kind == "aloop":
        aloop = import_aloop()
        root = os.path.dirname(os.path.dirname(os.path.abspath(aloop.__file__)))
        parts = [root]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


# Prepended to the code of child processes: defines KIND, new_loop(),
# run(coro, **kw) and LOOP_CLASS for the loop kind the parent asked for.
CHILD_PRELUDE = textwrap.dedent(
    """\
    import asyncio, os, sys
    KIND = os.environ["ALOOP_TEST_KIND"]
    if KIND == "aloop":
        import aloop
        new_loop = aloop.new_event_loop
        run = aloop.run
        LOOP_CLASS = aloop.Loop
    else:
        new_loop = asyncio.SelectorEventLoop
        run = asyncio.run
        LOOP_CLASS = asyncio.SelectorEventLoop
    """
)


def run_child(kind, code=None, args=(), *, env=None, timeout=CHILD_TIMEOUT,
              input=None, cwd=None, prelude=True):
    """Run `sys.executable -c code` (or `sys.executable *args` when code is
    None) for the given loop kind; return the CompletedProcess (text mode).
    """
    if code is not None:
        src = textwrap.dedent(code)
        if prelude:
            src = CHILD_PRELUDE + src
        cmd = [sys.executable, "-c", src, *args]
    else:
        cmd = [sys.executable, *args]
    return subprocess.run(
        cmd,
        env=child_env(kind, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        cwd=cwd,
    )


def describe(proc):
    return (
        f"returncode={proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
