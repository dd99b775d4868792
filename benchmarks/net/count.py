"""Server cost per request over a fixed number of requests.

    python -m benchmarks.net.count --loop aloop --mode protocol
        [--client echo|churn] [--size 1024] [--conns 10] [--requests N]
        [--unix] [--callgrind]

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


def callgrind_instructions(argv, requests):
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, "-m", "benchmarks.net.count", *argv,
           "--requests", str(requests)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"valgrind failed:\n{proc.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


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
    p.add_argument("--callgrind", action="store_true",
                   help="user-space instructions per request (valgrind)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.size < 1 or args.conns < 1:
        p.error("--requests, --size and --conns must be positive")
    if args.requests < args.conns:
        p.error("--requests must be at least --conns")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.callgrind:
        # argparse keeps the last --requests: the one appended below
        rest = [a for a in argv if a != "--callgrind"]
        low = callgrind_instructions(rest, args.requests)
        high = callgrind_instructions(rest, 3 * args.requests)
        print(f"{args.loop} {args.mode} {args.client} size={args.size} "
              f"conns={args.conns}: "
              f"{(high - low) / (2 * args.requests):.0f} instructions per "
              f"request (callgrind, {args.requests} vs "
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
