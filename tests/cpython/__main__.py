"""Run CPython's test.test_asyncio (of the running interpreter) on aloop.

    cd /work/main   # the repository root, with aloop built in place
    python -m tests.cpython [--modules test_events,test_tasks | --sample]
        [-j N] [--timeout SECONDS] [--stock] [--json OUT] [--table]

Each test.test_asyncio.test_* module runs in its own subprocess (_child.py),
which substitutes aloop for asyncio's loop (_substitute.py; not with
--stock) and reports every test as it starts and ends.  A test running
longer than --timeout, or a child dying, is recorded as "timeout"/"crash"
(with the tail of the child's output) and the module is restarted without
the tests already done and the bad one.

A test "ran on aloop" if it built at least one aloop loop (setUp, test or
tearDown), whatever its module: test_base_events, for one, has real-loop
tests (BaseEventLoopWithSelectorTests) beside its BaseEventLoop ones.
Tests that built none are "not about aloop": they exercise CPython's own
machinery (TestLoop, mocked selectors, BaseEventLoop subclasses).  They are
run and reported but never fail the run.

expected_failures/<major>.<minor>.txt lists known aloop failures, one
`<test id>  # <reason>` per line.  A test that ran on aloop, failed (failed,
error, unexpected_success, timeout, crash) and is not listed is re-run on
stock asyncio; if it fails there too it is "fails on stock too"
(environment), otherwise an "unexpected failure".  Unexpected failures and
listed tests that passed ("unexpected passes") make the exit status 1.

--stock runs everything on stock asyncio (the baseline): no substitution,
no expected-failures comparison; every failing test outside
PRIVATE_MODULES counts as unexpected.
"""

import argparse
import concurrent.futures
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "test.test_asyncio"

# Modules testing CPython's private loop machinery, not the event loop:
# with --stock (where no test builds an aloop loop) their failures are
# reported apart.
PRIVATE_MODULES = {"test_base_events", "test_selector_events",
                   "test_proactor_events", "test_windows_events",
                   "test_windows_utils"}

# --sample (for CI): the modules whose tests build real loops and do I/O,
# subprocesses, signals or scheduling on them: ~25s with -j 2 on 2 cores
# (the whole suite: ~40s).  Left out: test_tasks (20s, two thirds on TestLoop),
# test_runners (its loops are BaseEventLoop), the private modules.
# Modules missing from the running interpreter are skipped.
SAMPLE = ["test_events", "test_streams", "test_sock_lowlevel", "test_server",
          "test_sendfile", "test_ssl", "test_sslproto", "test_subprocess",
          "test_unix_events", "test_buffered_proto", "test_taskgroups",
          "test_timeouts", "test_waitfor", "test_eager_task_factory",
          "test_staggered"]

# Slowest modules first (measured), so that -j N overlaps them.
SLOW_FIRST = ["test_tasks", "test_subprocess", "test_events", "test_ssl",
              "test_taskgroups", "test_sslproto", "test_futures",
              "test_sock_lowlevel", "test_sendfile", "test_base_events"]

BAD = {"failed", "error", "unexpected_success", "timeout", "crash"}
GRACE = 5.0        # seconds past --timeout before the child is killed
TAIL_LINES = 50    # lines of child output kept for a crash or timeout
POLL = 0.2


def all_modules():
    spec = importlib.util.find_spec(PACKAGE)
    names = set()
    for d in spec.submodule_search_locations:
        names.update(p.stem for p in Path(d).glob("test_*.py"))
    return sorted(names)


# ---------------------------------------------------------------------------
# Running one module (parent side)

def tail(path, n=TAIL_LINES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200_000))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


def faulthandler_frame(lines):
    """The innermost frame of the thread faulthandler dumped last (the
    crashing thread, or the main thread of a timeout dump)."""
    headers = [i for i, l in enumerate(lines) if "most recent call first" in l]
    current = [i for i in headers if lines[i].startswith("Current thread")]
    for start in (current or headers)[-1:]:
        for line in lines[start + 1:]:
            if line.strip().startswith("File "):
                return line.strip()
    return None


def describe_status(returncode):
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class Attempt:
    """One child process running (part of) a module."""

    def __init__(self, module, stock, timeout, tmp, n, exclude, only):
        self.module, self.timeout = module, timeout
        self.results = Path(tmp, f"results{n}.jsonl")
        self.log = Path(tmp, f"output{n}.txt")
        cmd = [sys.executable, "-m", "tests.cpython._child", module,
               "--results", str(self.results)]
        if stock:
            cmd.append("--stock")
        if exclude:
            path = Path(tmp, f"exclude{n}.json")
            path.write_text(json.dumps(sorted(exclude)))
            cmd += ["--exclude", str(path)]
        if only is not None:
            path = Path(tmp, f"only{n}.json")
            path.write_text(json.dumps(sorted(only)))
            cmd += ["--only", str(path)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.collected = None
        self.ended = []          # records of tests that ended
        self.current = None      # id of the test running
        self.last_id = None      # id of the last test that ended
        self.loops = 0           # aloop loops built since the last start/end
        self.done = False
        self.problem = None      # record of a crash/timeout, if any
        self._pos = 0
        self._partial = ""

    def _read(self):
        try:
            with open(self.results, encoding="utf-8") as f:
                f.seek(self._pos)
                data = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return
        data = self._partial + data
        *lines, self._partial = data.split("\n")
        for line in lines:
            if line:
                self._event(json.loads(line))

    def _event(self, ev):
        now = time.monotonic()
        self.last_event = now
        kind = ev["event"]
        if kind == "collected":
            self.collected = ev["tests"]
        elif kind == "start":
            self.current, self.started, self.loops = ev["test"], now, 0
        elif kind == "loop":
            self.loops += 1
        elif kind == "end":
            rec = {k: v for k, v in ev.items() if k not in ("event", "test")}
            rec = {"id": ev["test"], "module": self.module, **rec}
            self.ended.append(rec)
            self.current, self.last_id, self.loops = None, ev["test"], 0
        elif kind == "done":
            self.done = True

    def watch(self):
        """Follow the child until it finishes, dies or overruns."""
        self.last_event = self.started = time.monotonic()
        limit = self.timeout + GRACE
        while True:
            exited = self.proc.poll() is not None
            self._read()       # after poll(): all the child wrote is in
            if self.done:
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
                kill_group(self.proc)   # and whatever it left running
                return
            now = time.monotonic()
            overdue = self.current and now - self.started > self.timeout
            if exited and overdue:  # e.g. died during the stack dump
                return self._fail("timeout", f"timeout: still running after "
                                  f"{self.timeout:g}s, then "
                                  f"{describe_status(self.proc.returncode)}")
            if exited:
                return self._fail("crash", describe_status(self.proc.returncode))
            if self.current and now - self.started > limit:
                return self._fail("timeout",
                                  f"timeout: still running after {self.timeout:g}s")
            if not self.current and now - self.last_event > limit:
                return self._fail("timeout",
                                  f"timeout: no progress for {self.timeout:g}s "
                                  "outside any test")
            time.sleep(POLL)

    def _fail(self, outcome, exc):
        if outcome == "timeout" and self.proc.poll() is None:
            try:  # the child's faulthandler dumps every thread's stack
                os.kill(self.proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            time.sleep(1.0)  # let the dump reach the log
        kill_group(self.proc)
        if outcome == "crash":
            exc = f"crash: {exc}"
        lines = tail(self.log)
        if self.current:
            test_id = self.current
            duration = round(time.monotonic() - self.started, 3)
        else:
            where = f"after {self.last_id}" if self.last_id else "before any test"
            test_id = f"{PACKAGE}.{self.module} (outside tests, {where})"
            duration = None
        self.problem = {
            "id": test_id, "module": self.module, "outcome": outcome,
            "aloop_loops": self.loops, "duration": duration, "exc": exc,
            "where": faulthandler_frame(lines), "reason": None,
            "traceback": None, "returncode": self.proc.returncode,
            "fixture": not self.current, "stderr_tail": lines}


def run_module(module, *, stock, timeout, only=None, say=None):
    """Run one module until every test has a record; return (records,
    collected test ids)."""
    records = {}
    collected = None
    exclude = set()
    with tempfile.TemporaryDirectory(prefix=f"aloop-cpython-{module}-") as tmp:
        for n in range(1, 10_000):
            att = Attempt(module, stock, timeout, tmp, n, exclude, only)
            att.watch()
            if collected is None:
                collected = att.collected
            for rec in att.ended:
                records[rec["id"]] = rec
                exclude.add(rec["id"])
            if att.problem is None:
                break
            bad = att.problem
            records[bad["id"]] = bad
            if say:
                say(f"  {module}: {bad['outcome']}: {bad['id']} ({bad['exc']})")
            if not bad["fixture"]:
                exclude.add(bad["id"])
            elif not att.ended:
                break      # no progress: restarting would fail the same way
            todo = set(collected or ()) - exclude
            if only is not None:
                todo &= set(only)
            if not todo:
                break
    return list(records.values()), collected or []


# ---------------------------------------------------------------------------
# Expected failures, classification, report

def module_of(test_id):
    """Return "test_events" for test.test_asyncio.test_events.X.test_y (also
    inside "setUpClass (...)"-style ids); None if there is none."""
    m = re.search(r"\btest\.test_asyncio\.(test_\w+)", test_id)
    return m and m.group(1)


def read_expected(path):
    expected = {}
    if not path.exists():
        return expected
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, _, reason = line.partition("#")
        expected[test_id.strip()] = reason.strip()
    return expected


def classify(rec, expected, stock):
    """Put a record in exactly one table bucket (rec["category"])."""
    if rec["outcome"] == "skipped":
        return "skipped"
    if stock and rec["module"] in PRIVATE_MODULES:
        return "not_about_aloop"
    # A failure outside any test (import, setUpClass, between tests) counts
    # as about aloop: it may be why the module's tests never ran.
    if not stock and not rec["aloop_loops"] and not rec.get("fixture"):
        return "not_about_aloop"
    if rec["outcome"] in BAD:
        if stock:
            return "unexpected"
        if rec["id"] in expected:
            return "expected_failure"
        if rec.get("stock_outcome") in BAD:
            return "stock_too"
        return "unexpected"
    return "passed"


COLUMNS = [("tests", None), ("ran on aloop", "ran"), ("passed", "passed"),
           ("expected failures", "expected_failure"),
           ("unexpected failures", "unexpected"),
           ("fails on stock too", "stock_too"), ("skipped", "skipped"),
           ("not about aloop", "not_about_aloop")]


def counts(records):
    c = Counter(r["category"] for r in records)
    c["ran"] = sum(c[k] for k in ("passed", "expected_failure", "unexpected",
                                  "stock_too"))
    row = [len(records)] + [c[key] for _, key in COLUMNS[1:]]
    return row


def table(by_module, stock):
    head = [name for name, _ in COLUMNS]
    if stock:
        head[1] = "ran (stock)"
    out = ["| module | " + " | ".join(head) + " |",
           "|---" * (len(head) + 1) + "|"]
    total = [0] * len(head)
    for module, records in sorted(by_module.items()):
        row = counts(records)
        total = [a + b for a, b in zip(total, row)]
        out.append(f"| {module} | " + " | ".join(map(str, row)) + " |")
    out.append("| **total** | " + " | ".join(f"**{n}**" for n in total) + " |")
    return "\n".join(out), head, total


def one_line(text, limit=300):
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def describe(rec, indent="    "):
    lines = [f"- {rec['id']}  [{rec['outcome']}, {rec['aloop_loops']} aloop loops]",
             f"{indent}error: {one_line(rec.get('exc'))}"]
    if rec.get("where"):
        lines.append(f"{indent}at: {one_line(rec['where'])}")
    return lines


def stock_summary(rec):
    outcome, exc = rec["stock_outcome"], one_line(rec.get("stock_exc"))
    return exc if exc.startswith(outcome) else f"{outcome}: {exc}" if exc else outcome


def report(args, version, by_module, expected, stale, wall, stock):
    out = []
    title = "stock asyncio" if stock else "aloop"
    out.append(f"# CPython {version} test.test_asyncio on {title}")
    md, head, total = table(by_module, stock)
    if args.table:
        out += ["", md]
    records = [r for recs in by_module.values() for r in recs]
    unexpected = [r for r in records if r["category"] == "unexpected"]
    unexpected_pass = [r for r in records if r["category"] == "passed"
                       and r["id"] in expected and not stock]
    stock_too = [r for r in records if r["category"] == "stock_too"]
    other = [r for r in records if r["category"] == "not_about_aloop"
             and r["outcome"] in BAD]
    out += ["", "Totals: " + ", ".join(
        f"{name} {n}" for name, n in zip(head, total))
        + f"; unexpected passes {len(unexpected_pass)}",
        f"Wall time: {wall:.1f}s ({len(by_module)} modules, -j {args.jobs}, "
        f"timeout {args.timeout:g}s per test)"]
    out += ["", f"## Unexpected failures ({len(unexpected)})"]
    for r in unexpected:
        out += describe(r)
        if r.get("stock_outcome"):
            out.append(f"    on stock asyncio: {stock_summary(r)}")
    out += ["", f"## Unexpected passes ({len(unexpected_pass)})"]
    for r in unexpected_pass:
        out.append(f"- {r['id']}  (listed: {expected[r['id']]})")
    if not stock:
        out += ["", f"## Fails on stock asyncio too (environment) ({len(stock_too)})"]
        for r in stock_too:
            out += describe(r)
            out.append(f"    on stock asyncio: {stock_summary(r)}")
    out += ["", f"## Failures in tests not about aloop (informational) ({len(other)})"]
    for r in other:
        out += describe(r)
    if stale:
        out += ["", f"## WARNING: stale expected-failure entries ({len(stale)})"]
        out += [f"- {t}" for t in stale]
    return "\n".join(out), bool(unexpected or unexpected_pass)


def stock_match(rec, stock_records):
    """The stock run's record for the same test (or, for a failure outside
    tests, a failure outside tests of the same module)."""
    for s in stock_records:
        if s["id"] == rec["id"]:
            return s
    if "(outside tests" in rec["id"]:
        for s in stock_records:
            if "(outside tests" in s["id"] and s["outcome"] in BAD:
                return s
    return None


def rerun_on_stock(by_module, expected, args, say):
    """Run again on stock asyncio each test that failed on aloop and is not
    listed; set its stock_outcome/stock_exc.  Per module, one subprocess
    (restarted after a crash/timeout like any run) for just those tests,
    or for the whole module if something failed outside the tests."""
    rerun = {}
    for module, recs in by_module.items():
        bad = [r for r in recs if classify(r, expected, False) == "unexpected"]
        if bad:
            rerun[module] = bad
    if not rerun:
        return
    say(f"re-running {sum(map(len, rerun.values()))} unexpected failures "
        f"on stock asyncio")

    def job(module):
        bad = rerun[module]
        only = (None if any(r.get("fixture") for r in bad)
                else [r["id"] for r in bad])
        return run_module(module, stock=True, timeout=args.timeout,
                          only=only, say=say)[0]

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for module, stock_records in zip(rerun, pool.map(job, rerun)):
            for r in rerun[module]:
                s = stock_match(r, stock_records)
                r["stock_outcome"] = s["outcome"] if s else "not run"
                r["stock_exc"] = s.get("exc") if s else None


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.cpython",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--modules", help="comma-separated module names "
                    "(default: every test.test_asyncio.test_* module)")
    ap.add_argument("--sample", action="store_true",
                    help="only the modules in SAMPLE (for CI)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds per test (default 60)")
    ap.add_argument("--stock", action="store_true",
                    help="run on stock asyncio (no substitution)")
    ap.add_argument("--json", metavar="OUT", help="write every record here")
    ap.add_argument("--table", action="store_true",
                    help="print the per-module markdown table")
    ap.add_argument("-j", "--jobs", type=int, default=1,
                    help="module subprocesses run at once (default 1)")
    args = ap.parse_args(argv)

    available = all_modules()
    if args.modules:
        modules = [m.strip() for m in args.modules.split(",") if m.strip()]
        unknown = [m for m in modules if m not in available]
        if unknown:
            ap.error(f"no such module(s) in {PACKAGE}: {', '.join(unknown)}")
    elif args.sample:
        modules = [m for m in SAMPLE if m in available]
    else:
        modules = available
    modules.sort(key=lambda m: (SLOW_FIRST.index(m) if m in SLOW_FIRST
                                else len(SLOW_FIRST), m))

    version = ".".join(map(str, sys.version_info[:3]))
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    exp_path = HERE / "expected_failures" / f"{ver}.txt"
    if not exp_path.exists() and not args.stock:
        print(f"warning: {exp_path} does not exist", file=sys.stderr)
    expected = read_expected(exp_path)

    lock = threading.Lock()

    def say(msg):
        with lock:
            print(msg, file=sys.stderr, flush=True)

    start = time.monotonic()
    mode = "stock asyncio" if args.stock else "aloop"
    say(f"Python {version}, {mode}: {len(modules)} modules, -j {args.jobs}")
    by_module, collected = {}, {}
    done = [0]

    def job(module):
        t0 = time.monotonic()
        recs, ids = run_module(module, stock=args.stock, timeout=args.timeout,
                               say=say)
        bad = sum(r["outcome"] in BAD for r in recs)
        with lock:
            done[0] += 1
            n = done[0]
        say(f"[{n}/{len(modules)}] {module}: {len(recs)} tests, {bad} not ok, "
            f"{time.monotonic() - t0:.1f}s")
        return module, recs, ids

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for module, recs, ids in pool.map(job, modules):
            by_module[module], collected[module] = recs, ids

    if not args.stock:
        rerun_on_stock(by_module, expected, args, say)
    for recs in by_module.values():
        for r in recs:
            r["category"] = classify(r, expected, args.stock)
            r["listed"] = expected.get(r["id"])
    wall = time.monotonic() - start

    # Listed ids that are not in the suite (only for the modules run).
    known = {t for ids in collected.values() for t in ids}
    known |= {r["id"] for recs in by_module.values() for r in recs}
    stale = sorted(t for t in expected if t not in known
                   and module_of(t) in set(modules) | {None})

    text, failed = report(args, version, by_module, expected, stale, wall,
                          args.stock)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"python": version, "mode": mode, "wall_time": wall,
                       "timeout": args.timeout, "modules": modules,
                       "expected_failures": str(exp_path), "stale": stale,
                       "records": [r for m in modules for r in by_module[m]]},
                      f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
