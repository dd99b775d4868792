"""Server cost per request over a fixed number of requests.

    python -m benchmarks.net.count --loop aloop --mode protocol
        [--client echo|churn] [--size 1024] [--conns 10] [--requests N]
        [--unix] [--callgrind | --syscalls]

Runs one echo server mode of servers.py in this process and the C load
generator with a fixed request count (connections for --client churn), then
prints the server's user and system CPU, page faults and context switches
per request, from getrusage.  Where run.py compares loops by timed runs,
this is for looking at one loop's per-request cost while changing it (and
for strace/perf on a known amount of work).  As in run.py, the server (this
process) runs on CPU 0 and the load generator on CPU 1 when both are
available: unpinned, the two share CPUs and the figures mean little.

--callgrind runs the same thing twice under valgrind's callgrind (only this
process: the load generator is not traced), with N and 3N requests, and
prints the difference in instructions divided by 2N: the user-space
instructions per request, without start-up costs.  Instruction counts are
stable on a noisy machine where CPU time is not.

--syscalls does the same under `perf stat --no-inherit` with the syscall
tracepoints (root, or perf_event_paranoid <= -1): the system calls this
process makes per request, by name.  Together with --callgrind this is the
work a loop does per request, free of the timer and idle effects that make
CPU time at one connection on a VM a poor measure (README.md, "Reading the
numbers").
"""

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile

from . import cbuild, harness, servers

ECHO_MODES = ("protocol", "buffered", "streams", "sockops")


async def serve_and_load(args, loadgen):
    loop = asyncio.get_running_loop()
    unix_path = None
    if args.unix:
        unix_path = os.path.join(tempfile.mkdtemp(prefix="alc"), "s")
    lsock = servers.listening_socket(0, unix_path)
    server = await servers.start(loop, args.mode, lsock)
    if unix_path is not None:
        target = ["--unix", unix_path]
    else:
        target = ["--tcp", "127.0.0.1:%d" % lsock.getsockname()[1]]
    cmd = [str(loadgen), *target, "--mode", args.client,
           "--conns", str(args.conns), "--size", str(args.size),
           "--requests", str(args.requests), "--duration", "600"]
    before = resource.getrusage(resource.RUSAGE_SELF)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE,
        preexec_fn=harness.pinned(harness.CLIENT_CPU, args.pin))
    out, _ = await proc.communicate()
    after = resource.getrusage(resource.RUSAGE_SELF)
    if proc.returncode != 0:
        raise SystemExit(f"loadgen failed ({proc.returncode})")
    if isinstance(server, asyncio.Task):  # sockops: the accept loop
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    else:
        server.close()
    if unix_path is not None:
        os.unlink(unix_path)
        os.rmdir(os.path.dirname(unix_path))
    n = args.requests

    def per(field, scale=1.0):
        return (getattr(after, field) - getattr(before, field)) * scale / n

    print(f"{args.loop} {args.mode} {args.client} size={args.size} "
          f"conns={args.conns} requests={n}: "
          f"user {per('ru_utime', 1e6):.2f} us, "
          f"sys {per('ru_stime', 1e6):.2f} us, "
          f"faults {per('ru_minflt'):.2f}, "
          f"ctx switches {per('ru_nvcsw') + per('ru_nivcsw'):.2f} "
          f"per request")
    sys.stdout.flush()


def _self_command(argv, requests):
    return [sys.executable, "-m", "benchmarks.net.count", *argv,
            "--requests", str(requests)]


def callgrind_instructions(argv, requests):
    """{"instructions": n} for one run of this tool under callgrind."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           *_self_command(argv, requests)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"valgrind failed:\n{proc.stderr[-2000:]}")
    return {"instructions": int(m.group(1).replace(",", ""))}


# The calls an echo or churn server makes; anything else shows up in "all".
SYSCALLS = ("recvfrom", "recvmsg", "read", "readv", "sendto", "sendmsg",
            "write", "writev", "epoll_wait", "epoll_pwait", "epoll_pwait2",
            "epoll_ctl", "ioctl", "accept4", "close", "shutdown",
            "setsockopt", "getsockopt", "getsockname", "getpeername",
            "brk", "mmap", "munmap", "madvise")


def perf_syscalls(argv, requests):
    """{name: count} of this process's system calls for one run of this
    tool (the load generator, a child, is not counted)."""
    events = ["raw_syscalls:sys_enter"] + [
        f"syscalls:sys_enter_{name}" for name in SYSCALLS]
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        cmd = ["perf", "stat", "--no-inherit", "-x,", "-o", out.name,
               "-e", ",".join(events), "--", *_self_command(argv, requests)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        counts = {}
        for line in out.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                name = fields[2].rpartition(":")[2]
                counts["all" if name == "sys_enter" else
                       name.removeprefix("sys_enter_")] = int(fields[0])
    if proc.returncode != 0 or "all" not in counts:
        raise SystemExit(f"perf stat failed (are the syscall tracepoints "
                         f"readable?):\n{proc.stderr[-2000:]}")
    return counts


def per_request_difference(measure, argv, requests):
    """measure() at N and at 3N requests: the difference over 2N, which
    leaves out start-up and teardown."""
    low = measure(argv, requests)
    high = measure(argv, 3 * requests)
    return {k: (high[k] - low.get(k, 0)) / (2 * requests) for k in high}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.net.count",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", choices=servers.LOOPS, required=True)
    p.add_argument("--mode", choices=ECHO_MODES, default="protocol")
    p.add_argument("--client", choices=("echo", "churn"), default="echo")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--conns", type=int, default=10)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--unix", action="store_true")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--callgrind", action="store_true",
                     help="user-space instructions per request (valgrind)")
    how.add_argument("--syscalls", action="store_true",
                     help="system calls per request (perf stat)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.size < 1 or args.conns < 1:
        p.error("--requests, --size and --conns must be positive")
    if args.requests < args.conns:
        p.error("--requests must be at least --conns")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.callgrind or args.syscalls:
        # argparse keeps the last --requests: the one appended by measure
        rest = [a for a in argv if a not in ("--callgrind", "--syscalls")]
        measure = callgrind_instructions if args.callgrind else perf_syscalls
        per = per_request_difference(measure, rest, args.requests)
        if args.callgrind:
            what = f"{per['instructions']:.0f} instructions"
        else:
            what = ", ".join(f"{k} {v:.2f}" for k, v in per.items()
                             if k == "all" or v >= 0.005)
        print(f"{args.loop} {args.mode} {args.client} size={args.size} "
              f"conns={args.conns}: {what} per request "
              f"({'callgrind' if args.callgrind else 'perf stat'}, "
              f"{args.requests} vs "
              f"{3 * args.requests} requests)")
        return
    loadgen = cbuild.build("loadgen")
    args.pin = harness.can_pin()
    if args.pin:
        os.sched_setaffinity(0, {harness.SERVER_CPU})
    loop = servers.new_loop(args.loop)
    try:
        loop.run_until_complete(serve_and_load(args, loadgen))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
