"""Benchmark runner: the loop-core workloads on asyncio, uvloop and aloop.

Run from the repository root:

    python -m benchmarks.run [--loops asyncio,uvloop,aloop] [--only a,b]
                             [--rounds 5] [--quick] [--json out.json]

How it measures
---------------
* Every (workload, loop) run is a fresh child process (``sys.executable -m
  benchmarks.run --child ...``, working directory = repository root), so no
  run inherits another's heap, caches or loop state.
* The child creates the loop (``asyncio.new_event_loop()``,
  ``uvloop.new_event_loop()`` or ``aloop.new_event_loop()``), runs a small
  warm-up of the workload in check mode (callbacks count their calls and the
  workload asserts that everything it claims to have done was done), then the
  timed run with do-nothing callbacks.  The timed run is bounded by a count
  and by ``--time-limit`` seconds (default 20); a child that is still alive
  after time-limit + 10 s (30 s by default) is killed, by the parent and by
  its own ``signal.alarm``.  The child prints one JSON line: ops, wall seconds
  (``time.perf_counter``), ops/s, and the process CPU seconds (user + system,
  ``resource.getrusage(RUSAGE_SELF)``) of the timed region.
* Rounds: each round runs every workload once on every loop, one process at a
  time, the loop order rotating from round to round, so slow drifts of the
  machine spread over all loops evenly.
* Report: the median ops/s per loop over the rounds, the spread (half the
  min-max range, in % of the median), and the ratios of medians
  aloop/asyncio, aloop/uvloop (and uvloop/asyncio for reference); a ratio
  above 1 means the first loop is faster.
"""

import argparse
import datetime
import gc
import importlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALL_LOOPS = ("asyncio", "uvloop", "aloop")
QUICK_DIVISOR = 20
WARMUP_FRACTION = 10        # warm-up does count // WARMUP_FRACTION ops
WARMUP_TIME_LIMIT = 2.0     # seconds
KILL_MARGIN = 8.0           # a child dies at time_limit + warm-up + this (30 s)


# --------------------------------------------------------------------------
# Child side: one workload on one loop, result as one JSON line on stdout.
# --------------------------------------------------------------------------

def _loop_module(name):
    if name not in ALL_LOOPS:
        raise SystemExit(f"unknown loop {name!r}; known: {', '.join(ALL_LOOPS)}")
    return importlib.import_module(name)


def _loop_info(name, module, loop):
    cls = type(loop)
    if name == "asyncio":
        version = platform.python_version()
    else:
        version = getattr(module, "__version__", "?")
    return {
        "loop": name,
        "version": version,
        "file": getattr(module, "__file__", None),
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "debug": loop.get_debug(),
    }


def _cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_main(argv):
    p = argparse.ArgumentParser(prog="benchmarks.run --child")
    p.add_argument("--loop", required=True)
    p.add_argument("--workload")
    p.add_argument("--count", type=int)
    p.add_argument("--time-limit", type=float, default=20.0)
    p.add_argument("--probe", action="store_true",
                   help="only create and close a loop, print its description")
    args = p.parse_args(argv)

    # Hard bound on the child's life even if the parent is gone: SIGALRM's
    # default action ends the process.
    signal.alarm(math.ceil(args.time_limit + WARMUP_TIME_LIMIT + KILL_MARGIN))

    import asyncio
    from benchmarks.workloads import WORKLOADS

    module = _loop_module(args.loop)
    loop = module.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        info = _loop_info(args.loop, module, loop)
        if args.probe:
            print(json.dumps(info))
            return 0
        fn, _ = WORKLOADS[args.workload]
        n = args.count

        # Warm-up, in check mode: also proves the loop did the work.
        warm_n = max(1, n // WARMUP_FRACTION)
        fn(loop, warm_n, time.perf_counter() + WARMUP_TIME_LIMIT, True)

        gc.collect()
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        ops = fn(loop, n, t0 + args.time_limit, False)
        t1 = time.perf_counter()
        cpu1 = _cpu_seconds()

        elapsed = t1 - t0
        result = dict(info, workload=args.workload, count=n, ops=ops,
                      elapsed=elapsed, cpu=cpu1 - cpu0,
                      ops_per_sec=ops / elapsed if elapsed > 0 else 0.0,
                      truncated=ops < n)
        print(json.dumps(result))
        return 0
    finally:
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


# --------------------------------------------------------------------------
# Parent side: probe loops, schedule child runs, aggregate, report.
# --------------------------------------------------------------------------

def _child_env():
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_child(child_args, timeout, show_stderr=True):
    """Run ``python -m benchmarks.run --child ...``.

    Returns (result, None) or (None, one-line error); on failure the child's
    stderr is passed through to ours if show_stderr.
    """
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", *child_args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_child_env(), timeout=timeout,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return None, f"killed after {timeout:.0f} s"
    if proc.returncode != 0:
        if show_stderr:
            sys.stderr.write(proc.stderr)
        if proc.returncode < 0:
            return None, f"killed by signal {-proc.returncode}"
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return None, f"exit {proc.returncode}: {tail}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, f"bad output: {proc.stdout[-200:]!r}"


def probe_loops(names, explicit):
    """Return ({name: info} for loops that work, {name: reason} missing)."""
    found, missing = {}, {}
    for name in names:
        info, err = run_child(["--loop", name, "--probe"], 60,
                              show_stderr=explicit)
        if info is not None:
            found[name] = info
            continue
        missing[name] = err
        if explicit:
            sys.exit(f"error: loop {name!r} was requested but does not work "
                     f"here ({err}); run: cd {ROOT} && {sys.executable} -m "
                     f"benchmarks.run --child --loop {name} --probe")
    return found, missing


def fmt_rate(x):
    if x is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def summarize(runs):
    """runs: list of child results for one (workload, loop)."""
    rates = [r["ops_per_sec"] for r in runs]
    med = statistics.median(rates)
    return {
        "median_ops_per_sec": med,
        "spread_pct": 100.0 * (max(rates) - min(rates)) / 2 / med if med else 0.0,
        "median_elapsed": statistics.median(r["elapsed"] for r in runs),
        "median_cpu": statistics.median(r["cpu"] for r in runs),
        "median_ops_per_cpu_sec": statistics.median(
            r["ops"] / r["cpu"] for r in runs if r["cpu"] > 0) if any(
            r["cpu"] > 0 for r in runs) else None,
        "runs": len(runs),
        "truncated": any(r["truncated"] for r in runs),
    }


RATIOS = (("aloop", "asyncio"), ("aloop", "uvloop"), ("uvloop", "asyncio"))


def ratios(summary):
    out = {}
    for a, b in RATIOS:
        sa, sb = summary.get(a), summary.get(b)
        if sa and sb and sb["median_ops_per_sec"]:
            out[f"{a}/{b}"] = sa["median_ops_per_sec"] / sb["median_ops_per_sec"]
    return out


def render_table(workloads, loops, summaries, errors):
    pairs = [(a, b) for a, b in RATIOS if a in loops and b in loops]
    headers = ["workload"] + [f"{l} ops/s" for l in loops] + \
              [f"{a}/{b}" for a, b in pairs]
    rows = []
    for w in workloads:
        row = [w]
        for l in loops:
            s = summaries[w].get(l)
            if errors.get((w, l)):
                row.append("ERROR")
            elif s is None:
                row.append("-")
            else:
                mark = "*" if s["truncated"] else ""
                row.append(f"{fmt_rate(s['median_ops_per_sec'])}{mark} "
                           f"±{s['spread_pct']:.0f}%")
        r = ratios(summaries[w])
        for a, b in pairs:
            v = r.get(f"{a}/{b}")
            row.append("-" if v is None else f"{v:.2f}x")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                       for i, h in enumerate(headers))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(r)))
    return "\n".join(lines)


def git_revision():
    """The repository's commit, with "+dirty" if the work tree differs."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "aloop"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])

    from benchmarks.workloads import WORKLOADS

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Loop-core benchmarks: asyncio vs uvloop vs aloop, "
                    "one fresh process per run, loops alternating.")
    p.add_argument("--loops", help="comma-separated loops "
                   f"(default: {','.join(ALL_LOOPS)}; missing ones are skipped "
                   "unless named here, then it is an error)")
    p.add_argument("--only", help="comma-separated workloads (default: all)")
    p.add_argument("--rounds", type=int,
                   help="rounds; each runs every workload on every loop "
                        "(default 5, 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"counts / {QUICK_DIVISOR}, one round: a smoke test")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every workload's count (default 1)")
    p.add_argument("--time-limit", type=float, default=20.0,
                   help="seconds a timed run may take before stopping early "
                        "(default 20; the child is killed 10 s later)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--list", action="store_true", help="list workloads and exit")
    args = p.parse_args(argv)

    if args.list:
        for name, (fn, count) in WORKLOADS.items():
            doc = " ".join((fn.__doc__ or "").split())
            print(f"{name:28} {count:>10,}  {doc}")
        return 0

    explicit = args.loops is not None
    loops = args.loops.split(",") if explicit else list(ALL_LOOPS)
    for l in loops:
        if l not in ALL_LOOPS:
            p.error(f"unknown loop {l!r}; known: {', '.join(ALL_LOOPS)}")
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; see --list")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    scale = args.scale / (QUICK_DIVISOR if args.quick else 1)

    found, missing = probe_loops(loops, explicit)
    for name, why in missing.items():
        print(f"note: loop {name!r} is missing ({why}); skipped", file=sys.stderr)
    loops = [l for l in loops if l in found]
    if not loops:
        sys.exit("error: no loop to run")
    for name, info in found.items():
        print(f"{name}: {info['version']} {info['class']}  ({info['file']})",
              file=sys.stderr)
        if info["debug"]:
            print(f"warning: {name} runs in debug mode", file=sys.stderr)

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average is {load:.2f}: something else is running; "
              "results will be noisy", file=sys.stderr)

    counts = {w: max(1, int(WORKLOADS[w][1] * scale)) for w in workloads}
    timeout = args.time_limit + WARMUP_TIME_LIMIT + KILL_MARGIN
    results = {w: {l: [] for l in loops} for w in workloads}
    errors = {}
    started = time.perf_counter()
    for rnd in range(rounds):
        order = loops[rnd % len(loops):] + loops[:rnd % len(loops)]
        for w in workloads:
            parts = []
            for l in order:
                res, err = run_child(
                    ["--loop", l, "--workload", w, "--count", str(counts[w]),
                     "--time-limit", str(args.time_limit)], timeout)
                if err:
                    errors.setdefault((w, l), []).append(err)
                    parts.append(f"{l} ERROR ({err})")
                else:
                    results[w][l].append(res)
                    parts.append(f"{l} {fmt_rate(res['ops_per_sec'])}"
                                 f"{'*' if res['truncated'] else ''}")
            print(f"[{rnd + 1}/{rounds}] {w}: " + "  ".join(parts),
                  file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    sys.stderr.flush()

    summaries = {w: {l: summarize(rs) for l, rs in results[w].items() if rs}
                 for w in workloads}
    print()
    print(f"Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {rounds} round(s), "
          f"{'quick' if args.quick else 'full'} counts x{args.scale:g}; "
          f"median ops/s ±half-range; {total:.0f} s total")
    print(render_table(workloads, loops, summaries, errors))
    print("ratio > 1: the first loop is faster.  * = a run hit the time limit.")
    if missing:
        print("missing: " + ", ".join(missing))
    for (w, l), errs in errors.items():
        print(f"ERROR {w} on {l}: {errs[0]}" +
              (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""))

    if args.json:
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "git": git_revision(),
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load,
            "rounds": rounds,
            "quick": args.quick,
            "scale": args.scale,
            "time_limit": args.time_limit,
            "loops": found,
            "missing": missing,
            "workloads": {
                w: {"count": counts[w],
                    "loops": summaries[w],
                    "ratios": ratios(summaries[w]),
                    "errors": {l: errors[(w, l)] for l in loops if (w, l) in errors},
                    "runs": results[w]}
                for w in workloads},
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
