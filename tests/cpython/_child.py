"""Run one test.test_asyncio module in this process, reporting each test
as JSON lines in a results file (started by __main__, one per module).

    python -m tests.cpython._child test_events --results FILE
        [--stock] [--exclude FILE] [--only FILE]

Unless --stock, aloop is substituted for asyncio's loop (_substitute.py)
before the test module is imported.  Lines written, in order, each flushed
at once so the parent sees a test start before the test can hang or crash:

  {"event": "collected", "tests": [test ids]}
  {"event": "start", "test": id}
  {"event": "loop"}                       an aloop loop was built
  {"event": "end", "test": id, "outcome": ..., "aloop_loops": n, ...}
  {"event": "done"}                       the module finished

--exclude / --only name JSON files holding lists of test ids to leave out /
to run exclusively.  faulthandler prints a traceback on a fatal signal and
dumps every thread's stack on SIGUSR1, which the parent sends to a test
that outlives its timeout before it kills the process group.  (No watchdog
thread: faulthandler.dump_traceback_later's thread, exiting while a test
forks, left the sanitizer allocator's lock held in the child under ASan.)
"""

import argparse
import faulthandler
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import unittest

PACKAGE = "test.test_asyncio"


class Reporter:
    """Writes JSON lines to the results file (thread-safe: loops may be
    built from other threads)."""

    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, **record):
        line = json.dumps(record) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def describe_error(test, err):
    """(traceback text, first line of the exception, last traceback frame)."""
    etype, value, tb = err
    text = "".join(traceback.format_exception(etype, value, tb))
    exc = traceback.format_exception_only(etype, value)[0].strip()
    frames = traceback.extract_tb(tb)
    where = ""
    if frames:
        f = frames[-1]
        where = f"{f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
    return text, exc, where


class JsonLinesResult(unittest.TestResult):
    """A TestResult that reports each test's outcome through a Reporter."""

    BAD = {"failed": 3, "error": 3, "unexpected_success": 2}

    def __init__(self, reporter, counter=None):
        super().__init__()
        self.reporter = reporter
        self.counter = counter  # _substitute (counts aloop loops), or None
        self.current = None  # id of the running test
        self._reset()

    def _reset(self):
        if self.counter is not None:
            self.counter.built = 0
        self.outcome = None
        self.errors_text = []
        self.exc = self.where = self.reason = None
        self.t0 = time.monotonic()

    def _loops(self):
        return 0 if self.counter is None else self.counter.built

    def _set(self, outcome, err=None, test=None, subtest=None):
        # The first failure wins; "passed" never overrides a failure.
        if outcome in self.BAD or self.outcome is None:
            if self.outcome not in self.BAD:
                self.outcome = outcome
        if err is not None:
            text, exc, where = describe_error(test, err)
            if subtest is not None:
                text = f"[subtest {subtest._subDescription()}]\n{text}"
            self.errors_text.append(text)
            if self.exc is None:
                self.exc, self.where = exc, where

    # -- unittest.TestResult interface --------------------------------
    def startTest(self, test):
        super().startTest(test)
        self.current = test.id()
        self._reset()
        self.reporter.write(event="start", test=self.current, t=time.time())

    def stopTest(self, test):
        super().stopTest(test)
        self._end(test.id(), self.outcome or "error",
                  None if self.outcome else "no outcome reported")
        self.current = None

    def _end(self, test_id, outcome, exc=None, fixture=False):
        """Report a test's outcome; fixture: not a test but an error (or
        skip) outside any test, e.g. in setUpClass or at import."""
        self.reporter.write(
            event="end", test=test_id, outcome=outcome, fixture=fixture,
            aloop_loops=self._loops(),
            duration=round(time.monotonic() - self.t0, 3),
            exc=self.exc or exc, where=self.where, reason=self.reason,
            traceback="\n".join(self.errors_text) or None)
        self._reset()

    def _holder(self, test, outcome, err=None, reason=None):
        """An error/skip outside any test: setUpClass, tearDownModule..."""
        self.outcome = None
        self._set(outcome, err, test)
        self.reason = reason
        self._end(test.id() if hasattr(test, "id") else str(test), outcome,
                  fixture=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set("passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        if self.current is None:
            return self._holder(test, "failed", err)
        self._set("failed", err, test)

    def addError(self, test, err):
        super().addError(test, err)
        if self.current is None:
            return self._holder(test, "error", err)
        self._set("error", err, test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._set("failed" if failed else "error", err, test, subtest)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if self.current is None and isinstance(test, unittest.TestCase):
            # 3.12 reports a skipped test without calling startTest first
            self.startTest(test)
        if self.current is None:
            return self._holder(test, "skipped", reason=reason)
        self._set("skipped")
        self.reason = reason

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set("expected_failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set("unexpected_success")
        self.exc = "unexpected success (test is marked @expectedFailure)"


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def read_ids(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return set(json.load(f))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("--results", required=True)
    ap.add_argument("--stock", action="store_true")
    ap.add_argument("--exclude")
    ap.add_argument("--only")
    args = ap.parse_args(argv)

    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # A runner started in the background (`cmd &`) inherits SIGINT ignored,
    # and then Python installs no KeyboardInterrupt handler: asyncio.Runner
    # leaves SIGINT alone and test_runners' interrupt tests hang.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reporter = Reporter(args.results)
    counter = None
    if not args.stock:
        from tests.cpython import _substitute

        _substitute.install()
        _substitute.on_build = lambda: reporter.write(event="loop")
        counter = _substitute

    name = f"{PACKAGE}.{args.module}"
    result = JsonLinesResult(reporter, counter)
    try:
        module = importlib.import_module(name)
    except unittest.SkipTest as exc:  # e.g. the Windows-only modules
        reporter.write(event="collected", tests=[name])
        result.reason = str(exc)
        result._end(name, "skipped", fixture=True)
        return finish(reporter)
    except BaseException:
        reporter.write(event="collected", tests=[name])
        result._set("error", sys.exc_info(), None)
        result._end(name, "error", fixture=True)
        return finish(reporter)

    tests = list(flatten(unittest.defaultTestLoader.loadTestsFromModule(module)))
    reporter.write(event="collected", tests=[t.id() for t in tests])
    exclude = read_ids(args.exclude) or set()
    only = read_ids(args.only)
    tests = [t for t in tests
             if t.id() not in exclude and (only is None or t.id() in only)]
    unittest.TestSuite(tests).run(result)
    return finish(reporter)


def finish(reporter):
    reporter.write(event="done")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: a thread a test left behind must not turn
    # a finished module into a hang (everything is reported already).
    os._exit(0)


if __name__ == "__main__":
    main()
