"""Network benchmark runner: echo, HTTP, connection-churn and UDP echo
servers on asyncio, uvloop, aloop and a raw C epoll server.

Run from the repository root:

    python -m benchmarks.net.run [--loops asyncio,uvloop,aloop,raw]
        [--only protocol/1k,http] [--rounds 3] [--duration 5] [--quick]
        [--json out.json] [--list]

What is measured, per cell (see cells.py) and loop: the client's requests/s
and the server's CPU time (user+sys, getrusage in the server process) per
request served.  Server pinned to CPU 0, client (loadgen.c, or wrk for http)
pinned to CPU 1, a fresh server process per measurement, a checked warm-up
before the timed window (harness.py).  One measurement at a time; each round
runs every cell on every loop, the loop order rotating from round to round.
The raw C server does not depend on the echo mode, so it is measured once
per round for each size/concurrency/transport (and once for both http
cells; udp has one mode) and that result is shown in every echo mode's
row.  Reported: the medians over the rounds, aloop/uvloop ratios, and the
issues' targets (targets.py).
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.net import cbuild, cells as cells_mod, harness, report, targets
from benchmarks.run import git_revision

ROOT = harness.ROOT
PY_LOOPS = ("asyncio", "uvloop", "aloop")
ALL_LOOPS = PY_LOOPS + ("raw",)
LOCK_PATH = Path(tempfile.gettempdir()) / "aloop-benchmarks-net.lock"
PER_RUN_OVERHEAD = 0.5  # seconds: server start, warm-up checks, stop


def probe(loop):
    """{"version", "cls", ...} of a Python loop, or raise RuntimeError."""
    cmd = [sys.executable, "-m", "benchmarks.net.servers", "--loop", loop,
           "--probe"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        raise RuntimeError("probe timed out") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(tail)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def server_cmd(cell, loop, tools):
    if loop == "raw":
        return [str(tools["rawecho"]), "--mode",
                {"http": "http", "udp": "udp"}.get(cell.kind, "echo")]
    return [sys.executable, "-m", "benchmarks.net.servers", "--loop", loop,
            "--mode", cell.server_mode]


def share_key(cell, loop):
    """Runs with the same key measure the same thing (within a round)."""
    if loop == "raw":
        return ("raw", cell.kind, cell.size, cell.conc, cell.transport)
    return (loop, cell.name)


def summarize(runs):
    def spread(values):
        med = statistics.median(values)
        return 100.0 * (max(values) - min(values)) / 2 / med if med else 0.0

    def med(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    rps = [r["rps"] for r in runs]
    cpu = [r["cpu_us_per_request"] for r in runs]
    udp = {}
    if any("losses" in r for r in runs):  # udp: totals over the rounds
        udp = {"losses": sum(r.get("losses", 0) for r in runs),
               "late": sum(r.get("late", 0) for r in runs),
               "round_trips": sum(r["requests"] for r in runs)}
    return {**udp, "rps": statistics.median(rps),
            "rps_spread_pct": spread(rps),
            "cpu_us_per_request": statistics.median(cpu),
            "cpu_spread_pct": spread(cpu), "p50_us": med("p50_us"),
            "p99_us": med("p99_us"), "server_util": med("server_util"),
            "client_util": med("client_util"),
            "others_cpu_max": max((r["others_cpu"] for r in runs
                                   if r.get("others_cpu") is not None),
                                  default=None),
            "runs": len(runs)}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.net.run",
        description="Network benchmarks: server CPU per request and rps on "
                    "asyncio, uvloop, aloop and a raw C server.")
    p.add_argument("--loops", help="comma-separated, from "
                   f"{','.join(ALL_LOOPS)}"
                   " (default: all; a missing Python loop is skipped unless "
                   "named here, then it is an error)")
    p.add_argument("--only", help="comma-separated cell filters, e.g. "
                   "protocol/1k,http,churn/unix (see --list)")
    p.add_argument("--rounds", type=int,
                   help="rounds (default 3, or 1 with --quick)")
    p.add_argument("--duration", type=float,
                   help="seconds per timed run (default 5, or 1 with --quick)")
    p.add_argument("--warmup", type=float,
                   help="seconds of checked warm-up per run (default 0.5, "
                        "or 0.2 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="1 s runs, 1 round: a smoke test")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server and the client to CPUs 0 and 1")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--list", action="store_true",
                   help="list the cells and exit")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup or (0.2 if args.quick else 0.5)
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0:
        p.error("--rounds, --duration and --warmup must be positive")
    try:
        args.cells = cells_mod.select(args.only)
    except ValueError as exc:
        p.error(str(exc))
    if not args.cells:
        p.error("--only selects no cell")
    explicit = args.loops is not None
    args.loop_list = args.loops.split(",") if explicit else list(ALL_LOOPS)
    for l in args.loop_list:
        if l not in ALL_LOOPS:
            p.error(f"unknown loop {l!r}; known: {', '.join(ALL_LOOPS)}")
    args.explicit_loops = explicit
    return args


def prepare(args):
    """Probe loops, check wrk, build the C tools.  Returns (loops, infos,
    missing, tools) or exits with a message."""
    infos, missing = {}, {}
    for l in args.loop_list:
        if l == "raw":
            infos[l] = {"loop": "raw", "version": "rawecho.c"}
            continue
        try:
            infos[l] = probe(l)
        except RuntimeError as exc:
            if args.explicit_loops:
                sys.exit(f"error: loop {l!r} does not work here ({exc}); try: "
                         f"cd {ROOT} && {sys.executable} -m "
                         f"benchmarks.net.servers --loop {l} --probe")
            missing[l] = str(exc)
            print(f"note: loop {l!r} is missing ({exc}); skipped",
                  file=sys.stderr)
    loops = [l for l in args.loop_list if l in infos]
    if not loops:
        sys.exit("error: no loop to run")
    if any(c.kind == "http" for c in args.cells) and not shutil.which("wrk"):
        sys.exit("error: the http cells need wrk, which is not on PATH. "
                 "Install it (apt-get install -y wrk) or leave the http "
                 "cells out with --only.")
    try:
        tools = {"loadgen": cbuild.build("loadgen")}
        if "raw" in loops:
            tools["rawecho"] = cbuild.build("rawecho")
    except cbuild.BuildError as exc:
        sys.exit(f"error: building the C tools: {exc}")
    return loops, infos, missing, tools


def run_all(args, loops, tools, unix_dir):
    """Every round, cell and loop; returns (results, errors)."""
    results = {c.name: {l: [] for l in loops} for c in args.cells}
    errors = {}
    pin = not args.no_pin
    for rnd in range(args.rounds):
        shared = {}
        order = loops[rnd % len(loops):] + loops[:rnd % len(loops)]
        for cell in args.cells:
            parts, messages = [], []
            for loop in order:
                key = share_key(cell, loop)
                if key not in shared:
                    spec = harness.RunSpec(
                        kind=cell.kind,
                        server_cmd=server_cmd(cell, loop, tools),
                        transport=cell.transport, conc=cell.conc,
                        size=cell.size, duration=args.duration,
                        warmup=args.warmup,
                        unix_path=str(unix_dir / "server.sock"),
                        loadgen=str(tools["loadgen"]), pin=pin)
                    try:
                        shared[key] = (harness.measure(spec), None)
                    except (harness.MeasureError, OSError) as exc:
                        shared[key] = (None, str(exc))
                        messages.append(f"    {loop}: {exc}")
                res, err = shared[key]
                if err:
                    errors.setdefault((cell.name, loop), []).append(err)
                    parts.append(f"{loop} ERROR")
                else:
                    results[cell.name][loop].append(res)
                    noisy = (res["others_cpu"] or 0) > report.NOISY
                    rps = report.fmt_rate(res["rps"])
                    cpu = report.fmt_us(res["cpu_us_per_request"])
                    parts.append(f"{loop} {rps} {cpu}us"
                                 f"{'(noisy)' if noisy else ''}")
            print(f"[{rnd + 1}/{args.rounds}] {cell.name}: "
                  + "  ".join(parts), *messages, sep="\n", file=sys.stderr,
                  flush=True)
    return results, errors


def estimate_seconds(args, loops):
    runs = {share_key(cell, l) for cell in args.cells for l in loops}
    per_run = args.duration + args.warmup + PER_RUN_OVERHEAD
    return len(runs) * args.rounds * per_run


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for c in args.cells:
            print(c.name)
        return 0

    # A SIGTERM unwinds like Ctrl-C, so the running server gets killed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    lock = open(LOCK_PATH, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"error: another benchmarks.net.run holds {LOCK_PATH}; "
                 "never run two benchmarks at once")

    loops, infos, missing, tools = prepare(args)
    for name, info in infos.items():
        print(f"{name}: {info.get('version')} {info.get('cls', '')}",
              file=sys.stderr)
    if not args.no_pin and not harness.can_pin():
        print("warning: CPUs 0 and 1 are not both available: not pinning",
              file=sys.stderr)
        args.no_pin = True
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average is {load:.2f}: something else is "
              "running; results will be noisy", file=sys.stderr)
    print(f"{len(args.cells)} cells x {len(loops)} loops x {args.rounds} "
          f"round(s) of {args.duration:g} s: about "
          f"{estimate_seconds(args, loops) / 60:.1f} min", file=sys.stderr)

    started = time.perf_counter()
    unix_dir = Path(tempfile.mkdtemp(prefix="aloop-net-"))
    try:
        results, errors = run_all(args, loops, tools, unix_dir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(unix_dir, ignore_errors=True)
    total = time.perf_counter() - started

    summaries = {c: {l: summarize(rs) for l, rs in per_loop.items() if rs}
                 for c, per_loop in results.items()}
    checks = targets.evaluate(args.cells, summaries)
    print()
    print(f"Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.rounds} round(s) of "
          f"{args.duration:g} s; server on CPU 0, client on CPU 1"
          f"{' (not pinned)' if args.no_pin else ''}; medians; "
          f"{total:.0f} s total")
    print("rps: requests/s seen by the client (churn: connections/s); "
          "us/req: server CPU (user+sys) per request")
    if any(c.kind == "udp" for c in args.cells):
        print("udp: dgram/s: datagram round trips/s seen by the client; "
              "us/dgram: server CPU per datagram echoed")
    print()
    print(report.render(args.cells, loops, summaries, errors, checks))
    print(report.render_targets(checks))
    print(report.render_noise(results))
    print(report.render_client_bound(args.cells, summaries))
    if any(c.kind == "udp" for c in args.cells):
        print(report.render_losses(args.cells, summaries))
    if "raw" in loops:
        print("raw: one C server measurement per size/concurrency/transport, "
              "shown in every echo mode.")
    for (cell, loop), errs in errors.items():
        print(f"ERROR {cell} on {loop}: {errs[0]}" +
              (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""))

    if args.json:
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "git": git_revision(),
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load,
            "rounds": args.rounds, "duration": args.duration,
            "warmup": args.warmup, "pinned": not args.no_pin,
            "loops": infos, "missing": missing,
            "cells": {
                c.name: {"kind": c.kind, "mode": c.mode, "size": c.size,
                         "concurrency": c.conc, "transport": c.transport,
                         "loops": summaries[c.name],
                         "errors": {l: errors[(c.name, l)] for l in loops
                                    if (c.name, l) in errors},
                         "runs": results[c.name]}
                for c in args.cells},
            "targets": [dict(vars(ch), met=ch.met) for ch in checks],
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
